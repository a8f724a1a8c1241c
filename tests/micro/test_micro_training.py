"""Training is not run in CI; these runs take a few steps of each stage to prove the command, its
checkpoints and its output work."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.micro.train import TrainConfig, train
from reelserve.models import LoadOptions, load_model

SMOKE = TrainConfig(
    vae_image_steps=2, vae_image_batch=2, vae_steps=2, vae_batch=1, vae_frames=5, latent_clips=2, steps=3, batch=2,
    decoder_steps=2, captions_per_scene=1, width=64, layers=2, first_frame_caption_swap=0.5,
)
SMOKE_FLAGS = ["--vae-image-steps", "1", "--vae-steps", "1", "--decoder-steps", "1", "--steps", "2", "--batch", "2",
               "--latent-clips", "2", "--captions-per-scene", "1", "--width", "64", "--layers", "2"]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for part in ("vae", "transformer"):
        for file in (directory / part).glob("*.safetensors"):
            tensors.update({f"{part}.{k}": v for k, v in load_file(file).items()})
    return tensors


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("smoke") / "model"
    return out, train(SMOKE, out)


def test_training_is_reproducible_from_a_seed(smoke_run: tuple[Path, dict], tmp_path: Path) -> None:
    first_dir, first = smoke_run
    second = train(SMOKE, tmp_path / "b")
    a, b = _weights(first_dir), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 50
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["denoiser_loss"] == second["denoiser_loss"] and first["decoder_loss"] == second["decoder_loss"]
    train(TrainConfig(**{**SMOKE.__dict__, "seed": 1}), tmp_path / "c")
    other = _weights(tmp_path / "c")
    assert not all(torch.equal(a[k], other[k]) for k in a)


@pytest.mark.parametrize("stop_after", [3, 6])  # in the VAE stage; in the denoiser stage
def test_a_stopped_run_resumes_to_the_same_weights(smoke_run: tuple[Path, dict], tmp_path: Path, stop_after: int) -> None:
    stopped = tmp_path / "run"
    partial = train(SMOKE, stopped, stop_after=stop_after)
    assert "decoder_loss" not in partial and (stopped / "checkpoint.pt").is_file()
    train(SMOKE, stopped)
    uninterrupted, resumed = _weights(smoke_run[0]), _weights(stopped)
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_vae_from_another_run_ends_with_a_full_runs_weights(smoke_run: tuple[Path, dict], tmp_path: Path) -> None:
    """``--vae-from``: the denoiser and decoder start from another run's VAE and latents, and the
    result is the one a full run makes (each stage draws from its own seeded generators)."""
    source = tmp_path / "vae"
    train(SMOKE, source, stop_after=SMOKE.vae_image_steps + SMOKE.vae_steps + 1)  # VAE and encoding done
    summary = train(SMOKE, tmp_path / "denoiser", vae_from=source)
    full, shared = _weights(smoke_run[0]), _weights(tmp_path / "denoiser")
    assert all(torch.equal(full[k], shared[k]) for k in full)
    assert summary["vae_from"] == str(source) and summary["vae_from_seconds"] > 0
    with pytest.raises(ValueError, match="vae_lr"):
        train(TrainConfig(**{**SMOKE.__dict__, "vae_lr": 1e-4}), tmp_path / "other", vae_from=source)


def test_vae_from_a_trained_model_trains_the_denoiser_that_model_has(smoke_run: tuple[Path, dict], tmp_path: Path) -> None:
    """``--vae-from`` a model directory (no checkpoint, as committed): its encoder was frozen after
    the VAE stage, so re-encoding gives the latents its denoiser saw, and the same denoiser results."""
    model = tmp_path / "model"
    shutil.copytree(smoke_run[0], model, ignore=shutil.ignore_patterns("checkpoint.pt"))
    config = TrainConfig(**{**SMOKE.__dict__, "decoder_steps": 0})
    summary = train(config, tmp_path / "denoiser", vae_from=model)
    full, source, trained = _weights(smoke_run[0]), _weights(model), _weights(tmp_path / "denoiser")
    assert all(torch.equal(full[k], trained[k]) for k in full if k.startswith("transformer."))
    assert all(torch.equal(source[k], trained[k]) for k in source if k.startswith("vae."))
    assert summary["vae_from"] == str(model) and summary["latent_clips"] == SMOKE.latent_clips
    with pytest.raises(ValueError, match="vae_edge_ring"):
        train(TrainConfig(**{**SMOKE.__dict__, "vae_edge_ring": 0}), tmp_path / "other", vae_from=model)
    with pytest.raises(ValueError, match="neither a training checkpoint nor a trained micro model"):
        train(SMOKE, tmp_path / "nothing", vae_from=tmp_path)


def test_a_checkpoint_of_another_configuration_is_refused(smoke_run: tuple[Path, dict], tmp_path: Path) -> None:
    stopped = tmp_path / "run"
    train(SMOKE, stopped, stop_after=1)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(**{**SMOKE.__dict__, "lr": 1e-3}), stopped)


def test_train_command_resumes_and_writes_a_model_both_pipelines_load(tmp_path: Path) -> None:
    out = tmp_path / "model"
    runner = CliRunner()
    first = runner.invoke(app, ["micro", "train", "--out", str(out), *SMOKE_FLAGS])
    assert first.exit_code == 0, first.output
    assert (out / "training.json").is_file() and "denoiser_loss" in first.output
    assert not (out / "text_encoder").exists()  # MiniLM is passed in at load time
    assert "circle" in json.loads((out / "vocabulary.json").read_text())
    again = runner.invoke(app, ["micro", "train", "--resume", str(out)])
    assert again.exit_code == 0, again.output  # a finished run resumes to itself
    missing = runner.invoke(app, ["micro", "train", "--resume", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no checkpoint" in missing.output
    loaded = load_model("micro", LoadOptions(device="cpu", path=str(out)))
    text = loaded.pipeline(
        prompt="a red circle moving right", height=32, width=32, num_frames=5, num_inference_steps=2,
        output_type="np", max_sequence_length=loaded.max_sequence_length,
    ).frames
    assert text.shape == (1, 5, 32, 32, 3)
    parts = {k: v for k, v in loaded.pipeline.components.items() if k != "transformer_2"}
    image_to_video = WanImageToVideoPipeline(**parts, image_encoder=None, image_processor=None, expand_timesteps=True)
    first_frame = Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))
    video = image_to_video(image=first_frame, prompt="a red circle moving right", height=32, width=32, num_frames=5,
                           num_inference_steps=2, output_type="np").frames
    assert video.shape == (1, 5, 32, 32, 3)


def test_eval_command_reports_accuracy_and_writes_a_contact_sheet(smoke_run: tuple[Path, dict], tmp_path: Path) -> None:
    sheet, report = tmp_path / "sheet.png", tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["micro", "eval", "--model-path", str(smoke_run[0]), "--limit", "2", "--seeds", "2", "--steps", "2",
         "--sheet", str(sheet), "--json", str(report)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    for attribute in ("color", "motion", "shape", "consistency"):
        assert attribute in result.output
    assert "text-to-video" in result.output and "image-to-video" in result.output and "kept" in result.output
    data = json.loads(report.read_text())
    text, image = data["text_to_video"], data["image_to_video"]
    assert len(text["clips"]) == 4 and set(text["accuracy"]) == {"color", "motion", "shape"}
    assert {(c["prompt"], c["seed"]) for c in text["clips"]} >= {(text["clips"][0]["prompt"], 1)}
    assert len(image["clips"]) == 4 and set(image["accuracy"]) == {"motion", "kept"}
    for path in (sheet, tmp_path / "sheet-i2v.png"):
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.height > picture.width / 10


@pytest.mark.parametrize("swap", [0.0, 1.0])
def test_image_to_video_rows_may_be_captioned_with_another_look_but_never_another_motion(swap: float) -> None:
    from reelserve.micro.architecture import build_untrained_pipeline
    from reelserve.micro.denoiser_stage import DenoiserStage
    from reelserve.micro.train import RunData

    config = TrainConfig(**{**SMOKE.__dict__, "first_frame_caption_swap": swap, "latent_clips": 64})
    stage = DenoiserStage(build_untrained_pipeline(0, 64, 2), config, RunData(latents=torch.zeros(64, 16, 5, 8, 8)))
    scenes = stage.scenes
    text_rows = [stage._caption_key(scene, first_frame=False) for scene in scenes]
    image_rows = [stage._caption_key(scene, first_frame=True) for scene in scenes]
    truth = [(s.shape, s.color, s.motion, s.background) for s in scenes]
    assert text_rows == truth
    assert all(key[2:] == real[2:] for key, real in zip(image_rows, truth, strict=True))
    looks_changed = sum(key[:2] != real[:2] for key, real in zip(image_rows, truth, strict=True))
    assert (looks_changed > len(scenes) // 2) if swap else looks_changed == 0
