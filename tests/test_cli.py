from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.video import probe_mp4

runner = CliRunner()


def test_models_reads_the_table_only_and_fits_80_columns() -> None:
    """No framework import (so it answers at once), every model's name whole, no line past 80."""
    code = ("import sys; from typer.testing import CliRunner; from reelserve.cli import app; "
            "r = CliRunner().invoke(app, ['models'], env={'COLUMNS': '80'}); print(r.output); "
            "print('HEAVY' if {'torch', 'diffusers', 'numpy', 'httpx', 'redis'} & set(sys.modules) else 'LIGHT')")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.rstrip().endswith("LIGHT"), out
    assert max(len(line) for line in out.splitlines()) <= 80
    for name in ("tiny", "micro", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"):
        assert f" {name} " in out, name


def test_models_lists_the_registry() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("tiny", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"):
        assert name in result.output


def test_generate_writes_the_requested_video(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = runner.invoke(
        app, ["generate", "a red kite", "-o", str(out), "--size", "48x32", "--num-frames", "5",
              "--steps", "2", "--fps", "10", "--seed", "3", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "seed=3" in result.output and "inference_s=" in result.output
    info = probe_mp4(out.read_bytes())
    assert (info.frames, info.width, info.height, info.fps) == (5, 48, 32, 10.0)


def test_generate_sets_the_cpu_threads_it_is_given(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["generate", "a red kite", "-o", str(tmp_path / "clip.mp4"), "--steps", "1",
                                     "--num-frames", "5", "--device", "cpu", "--cpu-threads", "1"])
        assert result.exit_code == 0, result.output
        assert "threads=1 " in result.output and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    refused = runner.invoke(app, ["generate", "x", "--cpu-threads", "0"], env={"COLUMNS": "300"})
    assert refused.exit_code == 2 and "--cpu-threads" in refused.output


def test_the_command_waits_passively_unless_told_otherwise() -> None:
    """OMP_WAIT_POLICY is read once, when torch loads libgomp: main() sets it before any torch import,
    and keeps a value the user exported."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from reelserve import cli; "
            "cli.app = lambda: print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules); cli.main()")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    shipped = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert shipped.stdout.split() == ["PASSIVE", "False"], shipped.stderr
    told = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, timeout=60)
    assert told.stdout.split() == ["ACTIVE", "False"], told.stderr


def test_generate_rejects_bad_input_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = runner.invoke(app, ["generate", "x", "-o", str(out), "--num-frames", "6", "--device", "cpu"])
    assert result.exit_code == 2 and "num_frames" in result.output
    assert not out.exists()


def test_serve_has_a_flag_per_setting() -> None:
    from reelserve.settings import Settings

    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in result.output
    text = " ".join(result.output.split())
    for shown in ("[default: 127.0.0.1]", "[default: 8000]", "[default: realtime,standard,batch]", "[default: micro]"):
        assert shown in text, shown  # Rich must not eat the bracketed defaults


def test_help_pages_show_clean_metavars() -> None:
    """No type beside a flag that takes no value (--help, --x/--no-x), and the argument by its name."""
    for command in (["generate"], ["serve"], ["models"], ["bench", "load"], []):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        help_line = next(line for line in result.output.splitlines() if "--help" in line)
        assert "<" not in help_line, help_line
    usage = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "300"}).output
    assert "generate [OPTIONS] {PROMPT}" in usage and "{prompt}" not in usage


def test_serve_rejects_bad_settings(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--model", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model" in result.output
    result = runner.invoke(app, ["serve", "--max-batch-size", "0", "--data-dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "--max-batch-size: Input should be greater than or equal to 1; got 0" in result.output
    result = runner.invoke(app, ["serve", "--model", "tiny", "--cache-sensitive-hook", "reelserve.nope:f",
                                 "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "cache_sensitive_hook" in result.output
    result = runner.invoke(app, ["serve", "--cache-sensitive-patterns", "(open", "--data-dir", str(tmp_path)],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--cache-sensitive-patterns: '(open' is not a regular expression" in result.output
    result = runner.invoke(app, ["serve", "--model", "tiny", "--default-tier", "gold", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "default tier 'gold'" in result.output
    result = runner.invoke(app, ["serve", "--model", "tiny", "--tenants", '{"k": {"tier": "gold"}}',
                                 "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "'gold'" in result.output
    late = '[{"name": "rt", "level": 0, "default_deadline_s": 30, "max_deadline_s": 20, "max_queue": 5}]'
    result = runner.invoke(app, ["serve", "--tiers", late, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "default_deadline_s is above max_deadline_s" in result.output


def test_settings_come_from_env(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from reelserve.settings import Settings

    monkeypatch.setenv("REELSERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("REELSERVE_API_KEYS", "a, b")
    monkeypatch.setenv("REELSERVE_REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("REELSERVE_CACHE_SENSITIVE_PATTERNS", r'["\\d{3,}", "secret"]')
    monkeypatch.setenv("REELSERVE_TENANTS", '{"key-a": {"tier": "realtime", "requests_per_minute": 30}}')
    monkeypatch.setenv("REELSERVE_DEGRADE_LEVELS", "[]")
    settings = Settings()
    assert settings.tenants["key-a"].tier == "realtime" and settings.tenants["key-a"].requests_per_minute == 30
    assert settings.degrade_levels == [] and [t.name for t in settings.tiers] == ["realtime", "standard", "batch"]
    assert settings.max_batch_size == 7 and settings.api_keys == ["a", "b"]
    assert settings.redis_url == "redis://127.0.0.1:6390/2"
    assert settings.cache_sensitive_patterns == [r"\d{3,}", "secret"]


def test_serve_refuses_a_port_in_use_before_saying_serving(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(app, ["serve", "--model", "tiny", "--port", str(port), "--data-dir", str(tmp_path)],
                               env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.output and "--port" in result.output
    assert "serving" not in result.output


def test_the_measuring_commands_keep_libgomps_own_wait_policy() -> None:
    """A server, and `generate`, spin briefly between parallel regions (libgomp's default): passive
    waiting made a batch of four micro clips take twice as long (docs/benchmarks.md, "The hot
    path"). They give a busy machine fewer threads instead; the other one-shot commands wait passively."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from reelserve import cli; "
            "cli.app = lambda: print(os.environ.get('OMP_WAIT_POLICY', 'unset')); sys.argv[1:] = [{!r}]; cli.main()")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for command, policy in (("serve", "unset"), ("worker", "unset"), ("generate", "unset"), ("models", "PASSIVE")):
        ran = subprocess.run([sys.executable, "-c", code.format(command)], env=env, capture_output=True, text=True,
                             timeout=60)
        assert ran.stdout.split() == [policy], (command, ran.stderr)


def first_frame(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.asarray(next(container.decode(video=0)).to_ndarray(format="rgb24"), dtype=float)


def test_generate_starts_from_an_image_as_a_server_would(tmp_path: Path) -> None:
    """micro from a first frame, red on the left and blue on the right: the video's first frame is that
    image (as the model's VAE gives it back); the same request without it is not. An image the model takes
    no frame from, or of another size with no --input-fit, is refused naming the field, as the API does."""
    from PIL import Image

    image = Image.new("RGB", (64, 64), (230, 20, 20))
    image.paste((20, 20, 230), (32, 0, 64, 64))
    image.save(tmp_path / "first.png")
    args = ["generate", "a ball", "--model", "micro", "--size", "64x64", "--num-frames", "5", "--steps", "2",
            "--seed", "4", "--device", "cpu"]
    made = runner.invoke(app, [*args, "-o", str(tmp_path / "from.mp4"), "--image", str(tmp_path / "first.png")])
    assert made.exit_code == 0, made.output
    plain = runner.invoke(app, [*args, "-o", str(tmp_path / "plain.mp4")])
    assert plain.exit_code == 0, plain.output
    frame, other = first_frame(tmp_path / "from.mp4"), first_frame(tmp_path / "plain.mp4")
    left, right = frame[:, 4:28].mean(axis=(0, 1)), frame[:, 36:60].mean(axis=(0, 1))
    assert left[0] > left[2] + 100 and right[2] > right[0] + 100, (left, right)
    assert abs(frame - other).mean() > 20

    image.resize((96, 64)).save(tmp_path / "wide.png")
    refusals = {"tiny": ["--model", "tiny", "--image", str(tmp_path / "first.png")],
                "input_fit": ["--image", str(tmp_path / "wide.png")]}
    for says, extra in refusals.items():
        refused = runner.invoke(app, [*args, "-o", str(tmp_path / "no.mp4"), *extra], env={"COLUMNS": "300"})
        assert refused.exit_code == 2 and "input_reference" in refused.output and says in refused.output, refused.output
    assert not (tmp_path / "no.mp4").exists()


def test_generate_redraws_a_clip(tmp_path: Path) -> None:
    """--video: the clip's frame count is the video's; at a low strength the result stays nearer the clip
    than the same request (another seed than the clip's) from noise."""
    args = ["--model", "tiny", "--size", "64x64", "--steps", "4", "--seed", "9", "--device", "cpu"]
    made = runner.invoke(app, ["generate", "a ball", *args, "--num-frames", "9", "--seed", "2",
                               "-o", str(tmp_path / "clip.mp4")])
    assert made.exit_code == 0, made.output
    redrawn = runner.invoke(app, ["generate", "a cube", *args, "--video", str(tmp_path / "clip.mp4"), "--strength",
                                  "0.25", "-o", str(tmp_path / "redrawn.mp4")])
    assert redrawn.exit_code == 0, redrawn.output
    fresh = runner.invoke(app, ["generate", "a cube", *args, "--num-frames", "9", "-o", str(tmp_path / "fresh.mp4")])
    assert fresh.exit_code == 0, fresh.output
    assert probe_mp4((tmp_path / "redrawn.mp4").read_bytes()).frames == 9
    clip, redrawn_frame, fresh_frame = (first_frame(tmp_path / f"{name}.mp4") for name in ("clip", "redrawn", "fresh"))
    assert abs(redrawn_frame - clip).mean() < abs(fresh_frame - clip).mean()
