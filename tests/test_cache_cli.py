"""``reelserve cache prewarm`` against a real server over loopback (tiny model) and a private Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import RedisServer, gate_pipeline, serve, wait_until
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.schemas.slo import DEFAULT_TIERS

runner = CliRunner()
PARAMS = ["--size", "32x32", "--num-frames", "5", "--num-inference-steps", "2", "--poll-interval", "0.05"]
PROMPTS = ["a paper boat on a river", "a red kite over a hill", "a lighthouse at night"]


def prewarm(url: str, prompts_file: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["cache", "prewarm", str(prompts_file), "--url", url, *PARAMS, *extra],
                           env={"COLUMNS": "200"})
    return result.exit_code, result.output


def outcome_row(output: str, outcome: str) -> int:
    """The count the summary table gives ``outcome``."""
    line = next(line for line in output.splitlines() if f" {outcome} " in line)
    return int(line.split("│")[2].strip())


def test_prewarm_fills_the_cache_for_later_requests(tmp_path: Path, redis_server: RedisServer) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(f"# holiday set\n{PROMPTS[0]}\n\n{PROMPTS[1]}\n   \n# more\n{PROMPTS[2]}\n")
    with serve(tmp_path / "data", warmup_runs=0, redis_url=redis_server.url, api_keys=["key"]) as running:
        code, output = prewarm(running.url, prompts_file, "--seed", "7", "--api-key", "key")
        assert code == 0, output
        assert (outcome_row(output, "completed"), outcome_row(output, "already cached")) == (3, 0), output
        assert outcome_row(output, "failed") == 0 and outcome_row(output, "total") == 3

        code, output = prewarm(running.url, prompts_file, "--seed", "7", "--api-key", "key", "--concurrency", "2")
        assert code == 0, output
        assert (outcome_row(output, "completed"), outcome_row(output, "already cached")) == (0, 3), output

        body = {"prompt": PROMPTS[1], "seed": 7, "size": "32x32", "num_frames": 5, "num_inference_steps": 2}
        hit = running.client.post("/v1/videos", json=body, headers={"Authorization": "Bearer key"}).json()
        assert hit["status"] == "completed" and hit["cached"] is True, hit
        jobs = running.client.get("/v1/videos", params={"limit": 100}, headers={"Authorization": "Bearer key"})
        ran = [video for video in jobs.json()["data"] if not video["cached"]]
        assert len(ran) == 3  # each prompt ran once
        assert {video["priority"] for video in ran} == {"batch"}  # out of real traffic's way

        bad = tmp_path / "bad.txt"
        bad.write_text(f"{PROMPTS[0]}\n")
        code, output = prewarm(running.url, bad, "--api-key", "key", "--num-frames", "6")
        assert code == 1 and outcome_row(output, "failed") == 1 and "num_frames" in output, output


def test_prewarm_comes_back_when_a_refusal_says_so(tmp_path: Path) -> None:
    tiers = [t.model_copy(update={"max_queue": 1}) if t.name == "batch" else t for t in DEFAULT_TIERS]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS))
    with serve(tmp_path / "data", warmup_runs=0, tiers=tiers) as running:
        gate = gate_pipeline(running)
        gate.hold()
        running.client.post("/v1/videos", json={"prompt": "blocker", "size": "32x32", "num_frames": 5})
        assert gate.entered.wait(30)
        metrics = running.server.engine.metrics

        def queue_full_refusals() -> float:
            return metrics.rejections.labels("queue_full")._value.get()

        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(prewarm, running.url, prompts_file, "--concurrency", "2", "--timeout", "60")
            # One prewarm job fills the batch queue; the second prompt is refused with Retry-After
            wait_until(lambda: queue_full_refusals() >= 1)
            gate.gate.set()
            code, output = result.result(timeout=120)
    assert code == 0, output
    assert outcome_row(output, "completed") == 3 and outcome_row(output, "failed") == 0, output


def test_prewarm_rejects_a_missing_or_empty_file(tmp_path: Path) -> None:
    code, output = prewarm("http://127.0.0.1:9", tmp_path / "nope.txt")
    assert code == 2 and "prompts file not found" in output and "nope.txt" in output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# only a comment\n\n")
    code, output = prewarm("http://127.0.0.1:9", empty)
    assert code == 2 and "no prompts" in output


def test_prewarm_help_says_the_seed_is_part_of_the_key() -> None:
    result = runner.invoke(app, ["cache", "prewarm", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "include the seed" in result.output and "priority" in result.output
