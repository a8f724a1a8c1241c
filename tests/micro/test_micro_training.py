"""Training is not run in CI; these runs take a few steps to prove the command and its output work."""

from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.micro.train import TrainConfig, train
from reelserve.models import LoadOptions, load_model

SMOKE = TrainConfig(
    vae_image_steps=2, vae_image_batch=2, vae_steps=2, vae_batch=1, vae_frames=5, latent_clips=2, steps=2, batch=2, checkpoint_every=1, decoder_steps=2
)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for part in ("vae", "transformer", "text_encoder"):
        for file in (directory / part).glob("*.safetensors"):
            tensors.update({f"{part}.{k}": v for k, v in load_file(file).items()})
    return tensors


def test_training_is_reproducible_from_a_seed(tmp_path: Path) -> None:
    first = train(SMOKE, tmp_path / "a")
    second = train(SMOKE, tmp_path / "b")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 50
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["denoiser_loss"] == second["denoiser_loss"]
    assert first["decoder_loss"] == second["decoder_loss"]
    other = _weights(_train_other_seed(tmp_path))
    assert not all(torch.equal(a[k], other[k]) for k in a)


def _train_other_seed(tmp_path: Path) -> Path:
    train(TrainConfig(**{**SMOKE.__dict__, "seed": 1}), tmp_path / "c")
    return tmp_path / "c"


def test_train_command_writes_a_loadable_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        ["micro", "train", "--out", str(out), "--vae-image-steps", "1", "--vae-steps", "1", "--decoder-steps", "1", "--steps", "2", "--batch", "2",
         "--latent-clips", "2"],
    )
    assert result.exit_code == 0, result.output
    assert (out / "training.json").is_file() and "denoiser_loss" in result.output
    loaded = load_model("micro", LoadOptions(device="cpu", path=str(out)))
    video = loaded.pipeline(
        prompt="a red circle moving right", height=32, width=32, num_frames=5, num_inference_steps=2,
        output_type="np", max_sequence_length=loaded.max_sequence_length,
    ).frames
    assert video.shape == (1, 5, 32, 32, 3)


def test_eval_command_reports_accuracy_and_writes_a_contact_sheet(tmp_path: Path) -> None:
    import json

    from PIL import Image

    model = tmp_path / "model"
    train(SMOKE, model)
    sheet, report = tmp_path / "sheet.png", tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["micro", "eval", "--model-path", str(model), "--limit", "2", "--seeds", "2", "--steps", "2",
         "--sheet", str(sheet), "--json", str(report)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    for attribute in ("color", "motion", "shape", "consistency"):
        assert attribute in result.output
    data = json.loads(report.read_text())
    assert len(data["clips"]) == 4 and set(data["accuracy"]) == {"color", "motion", "shape"}
    assert {(c["prompt"], c["seed"]) for c in data["clips"]} >= {(data["clips"][0]["prompt"], 1)}
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.height > image.width / 10
