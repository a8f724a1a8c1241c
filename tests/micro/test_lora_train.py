"""Adapter training is not run in CI at full length; these runs take a few steps on the committed
model to prove the command, its checkpoints and its file work. The committed adapters' effect is
measured in test_bundled_adapters.py."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from reelserve.adapters.registry import AdapterInfo
from reelserve.cli import app
from reelserve.micro.lora_train import LoraTrainConfig, train_lora
from reelserve.models.lora import read_lora
from reelserve.models.micro import MICRO_WEIGHTS

SMOKE = LoraTrainConfig(rank=4, steps=4, batch=2, latent_clips=4, captions_per_scene=1, warmup_steps=1)


@pytest.fixture(scope="module")
def smoke_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("adapter")
    return out, train_lora(SMOKE, MICRO_WEIGHTS, out)


def test_a_run_writes_a_lora_both_diffusers_and_reelserve_read(smoke_adapter: tuple[Path, dict]) -> None:
    from diffusers import WanPipeline

    from reelserve.models.minilm import minilm_components

    out, summary = smoke_adapter
    data = (out / "outline.safetensors").read_bytes()
    weights = read_lora(data)
    # Every attention projection and both feed-forward layers of each of the 6 blocks.
    assert len(weights.pairs) == 6 * (2 * 4 + 2)
    assert all(a.shape[0] == 4 and b.abs().max() > 0 for a, b in weights.pairs.values())  # trained off zero
    info = AdapterInfo(name="outline", sha256="", model="micro", bytes=0, **json.loads((out / "outline.json").read_text()))
    assert "outline" in info.description
    assert summary["steps_done"] == 4 and not (out / "checkpoint.pt").exists()
    pipe = WanPipeline.from_pretrained(MICRO_WEIGHTS, **minilm_components())
    pipe.load_lora_weights(str(out), weight_name="outline.safetensors", adapter_name="outline")
    assert pipe.get_active_adapters() == ["outline"]


def test_a_stopped_run_resumes_to_the_same_adapter(smoke_adapter: tuple[Path, dict], tmp_path: Path) -> None:
    partial = train_lora(SMOKE, MICRO_WEIGHTS, tmp_path, stop_after=2)
    assert "steps_done" not in partial and (tmp_path / "checkpoint.pt").is_file()
    assert not (tmp_path / "outline.safetensors").exists()
    train_lora(SMOKE, MICRO_WEIGHTS, tmp_path)
    uninterrupted = load_file(smoke_adapter[0] / "outline.safetensors")
    resumed = load_file(tmp_path / "outline.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


class Stopped(Exception):
    """A process stopped: raised from the progress callback."""


def test_a_run_stopped_while_making_its_data_resumes_to_the_same_adapter(tmp_path: Path) -> None:
    config = LoraTrainConfig(**{**SMOKE.__dict__, "latent_clips": 33, "checkpoint_minutes": 0.0})  # two chunks

    def stop_at_the_second_chunk(stage: str, done: int, total: int, loss: float | None) -> None:
        if stage == "encode" and done == 2:
            raise Stopped

    with pytest.raises(Stopped):
        train_lora(config, MICRO_WEIGHTS, tmp_path / "stopped", stop_at_the_second_chunk)
    saved = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert saved["position"] == "data" and len(saved["chunks"]) == 1
    resumed = train_lora(config, MICRO_WEIGHTS, tmp_path / "stopped")
    whole = train_lora(config, MICRO_WEIGHTS, tmp_path / "whole")
    assert resumed["steps_done"] == whole["steps_done"] == 4
    ours, theirs = (load_file(tmp_path / run / "outline.safetensors") for run in ("stopped", "whole"))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_another_seed_trains_another_adapter(smoke_adapter: tuple[Path, dict], tmp_path: Path) -> None:
    train_lora(LoraTrainConfig(**{**SMOKE.__dict__, "seed": 1}), MICRO_WEIGHTS, tmp_path)
    ours, theirs = load_file(smoke_adapter[0] / "outline.safetensors"), load_file(tmp_path / "outline.safetensors")
    assert not all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_command_trains_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    runner = CliRunner()
    flags = ["--rank", "2", "--steps", "1", "--batch", "1", "--latent-clips", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, ["micro", "lora", "outline", *flags])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "outline.safetensors").is_file() and '"steps_done": 1' in result.output
    refused = runner.invoke(app, ["micro", "lora", "watercolour", "--out", str(tmp_path / "w")])
    assert refused.exit_code == 2 and "unknown adapter 'watercolour'" in refused.output
    assert not (tmp_path / "w").exists()


def test_the_fast_recipe_distils_the_teacher_s_samples_and_recommends_its_settings(tmp_path: Path) -> None:
    from reelserve.micro.distill import STUDENT_SHIFT, STUDENT_STEPS, student_sigmas

    fast = LoraTrainConfig(recipe="fast", rank=4, steps=2, batch=2, latent_clips=2, captions_per_scene=1,
                           warmup_steps=1)
    partial = train_lora(fast, MICRO_WEIGHTS, tmp_path, stop_after=1)
    pairs = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["data"]
    assert pairs.samples.shape == pairs.noise.shape == (2, 16, 5, 8, 8) and "steps_done" not in partial
    # The teacher ran: its samples are far from the noise they started at, and within the latents' range.
    assert (pairs.samples - pairs.noise).abs().mean() > 0.5 and pairs.samples.abs().max() < 10
    summary = train_lora(fast, MICRO_WEIGHTS, tmp_path)
    assert summary["steps_done"] == 2
    sidecar = json.loads((tmp_path / "fast.json").read_text())
    assert (sidecar["steps"], sidecar["guidance"], sidecar["shift"]) == (STUDENT_STEPS, 1.0, STUDENT_SHIFT)
    AdapterInfo(name="fast", sha256="", model="micro", bytes=0, **sidecar)
    assert read_lora((tmp_path / "fast.safetensors").read_bytes()).pairs
    # The student is trained where its sampler will call it: the 4-step schedule at its shift.
    assert student_sigmas().tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5], abs=2e-3)
