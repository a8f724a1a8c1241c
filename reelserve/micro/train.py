"""Train the micro model from nothing: the VAE, then the transformer in latent space with Wan's
flow-matching objective (the text encoder is pretrained and frozen), then the decoder once more.
Deterministic given ``TrainConfig.seed``, and resumable: a run stopped at any checkpoint and resumed
ends with the same weights as an uninterrupted one.

Output is an ordinary diffusers pipeline directory (``save_pretrained``, safetensors) without a
text encoder, which the loader passes in (``reelserve.models.minilm``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanPipeline

from reelserve.micro.architecture import FLOW_SHIFT, build_untrained_pipeline
from reelserve.micro.captions import vocabulary
from reelserve.micro.checkpoint import CHECKPOINT, CheckpointClock, load_checkpoint, save_checkpoint
from reelserve.micro.denoiser_stage import DenoiserStage
from reelserve.micro.stage import Stage
from reelserve.micro.vae_stages import DecoderStage, EncodeStage, VaeStage

# (stage, step, total steps, latest loss or None)
ProgressFn = Callable[[str, int, int, float | None], None]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; the defaults are the committed model's run."""

    seed: int = 0
    threads: int = 2
    width: int = 192  # transformer width (heads of 32) and depth: about half a second a clip served
    layers: int = 6
    vae_image_steps: int = 1500
    vae_image_batch: int = 16
    vae_steps: int = 350
    vae_batch: int = 4
    # Full length: a VAE trained on shorter clips lets its causal cache drift on later frames.
    vae_frames: int = 17
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # The object covers ~7 % of a frame; unweighted, the loss is met by painting the background.
    vae_object_weight: float = 8.0
    # The weight reaches this many pixels past the object's edge: with the object alone weighted, a
    # blur that spills onto the background is cheap, and the decoder rounds every shape into a blob.
    vae_edge_ring: int = 2
    latent_clips: int = 4800
    # What fit in 330 s on one H200 (bench/gpu/micro_train.py --seconds 330); 1.44 s a step on 2 cores (2.3 h).
    steps: int = 5736
    batch: int = 128
    lr: float = 8e-4
    warmup_steps: int = 100
    noise_shift: float = FLOW_SHIFT
    first_frame_share: float = 0.5  # rows trained as image-to-video, the TI2V-5B way
    first_frame_caption_swap: float = 0.5  # of those, rows captioned with another shape and colour
    temporal_weight: float = 1.0  # weight of the frame-difference loss (motion, measured)
    captions_per_scene: int = 24
    caption_dropout: float = 0.1  # an empty caption, as the pipeline's default negative prompt
    ema_decay: float = 0.998
    decoder_steps: int = 1000
    decoder_lr: float = 1e-3
    # Generated latents are never exactly on the encoder's manifold; noise up to this fraction of
    # each channel's std teaches the decoder to draw clean frames from nearly-right latents.
    decoder_latent_noise: float = 0.3
    checkpoint_minutes: float = 10.0  # when checkpoints happen never changes the result


@dataclass
class RunData:
    """What one stage hands the next besides the pipeline's weights."""

    latents: torch.Tensor | None = None  # normalised training latents, float16
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    summary: dict[str, Any] = field(default_factory=dict)
    seconds_before: float = 0.0  # training time of earlier processes of this run


STAGES: tuple[type, ...] = (VaeStage, EncodeStage, DenoiserStage, DecoderStage)


def train(config: TrainConfig, out_dir: Path, progress: ProgressFn | None = None, stop_after: int | None = None,
          vae_from: Path | None = None, device: str = "cpu") -> dict:
    """Train into ``out_dir`` (the pipeline, ``training.json`` and ``checkpoint.pt``), continuing from
    the checkpoint there if there is one; return the summary. ``stop_after`` ends the run after that
    many steps in all, as a stopped process would (for tests of resuming). ``vae_from``: start at the
    denoiser with the VAE and latents of another run that got that far with the same VAE settings, or
    at encoding with the VAE of a trained model's directory. ``device``: where the modules train;
    random draws stay on the CPU, so a seed means the same data and noise on any device."""
    report = progress or (lambda *_: None)
    torch.set_num_threads(config.threads)
    # Subnormal floats are handled in microcode on x86 and can slow backward passes many times over.
    torch.set_flush_denormal(True)
    pipe = build_untrained_pipeline(config.seed, config.width, config.layers).to(device)
    data, position = RunData(summary={"config": asdict(config)}, device=torch.device(device)), (0, 0)
    saved = load_checkpoint(out_dir)
    if saved is None and vae_from is not None:
        from_run = (vae_from / CHECKPOINT).is_file()
        saved = _vae_checkpoint(vae_from, config) if from_run else _shipped_vae(vae_from, config)
    if saved is not None:
        position = _restore(pipe, data, config, saved)
        data.seconds_before = data.summary.get("seconds", 0.0)
    data.summary["device"] = str(device)
    started, budget = time.perf_counter(), stop_after
    clock = CheckpointClock(config.checkpoint_minutes * 60)
    for index in range(position[0], len(STAGES)):
        stage: Stage = STAGES[index](pipe, config, data)
        first = position[1] if index == position[0] else 0
        if first and saved is not None:
            stage.load_state_dict(saved["stage"])
        for step in range(first, stage.total):
            if budget is not None and budget <= 0:
                _checkpoint(pipe, data, out_dir, (index, step), stage, started)
                return data.summary
            loss = stage.step(step)
            budget = None if budget is None else budget - 1
            report(stage.name, step + 1, stage.total, loss)
            if clock.due():
                _checkpoint(pipe, data, out_dir, (index, step + 1), stage, started)
                clock.reset()
        data.summary.update(stage.finish())
        _checkpoint(pipe, data, out_dir, (index + 1, 0), None, started)
    return data.summary


def _checkpoint(pipe: WanPipeline, data: RunData, out_dir: Path, position: tuple[int, int],
                stage: Stage | None, started: float) -> None:
    """Save the resumable state, and the pipeline as it would ship now (a stopped run still leaves a
    usable model)."""
    data.summary["seconds"] = round(data.seconds_before + time.perf_counter() - started, 1)
    state = {
        "position": position,
        "modules": {"vae": pipe.vae.state_dict(), "transformer": pipe.transformer.state_dict()},
        "latents_stats": (pipe.vae.config.latents_mean, pipe.vae.config.latents_std),
        "latents": data.latents,
        "summary": data.summary,
        "stage": stage.state_dict() if stage is not None else None,
    }
    save_checkpoint(out_dir, state)
    shipped = getattr(stage, "shipped", None)
    if shipped is not None:
        with shipped():
            save_pipeline(pipe, out_dir, data.summary)
    else:
        save_pipeline(pipe, out_dir, data.summary)


def _restore(pipe: WanPipeline, data: RunData, config: TrainConfig, saved: dict) -> tuple[int, int]:
    if saved["summary"]["config"] != asdict(config):
        raise ValueError("the checkpoint in this directory was made with another configuration; resume "
                         "it with `reelserve micro train --resume DIR`, or train into a new directory")
    pipe.vae.load_state_dict(saved["modules"]["vae"])
    pipe.transformer.load_state_dict(saved["modules"]["transformer"])
    mean, std = saved["latents_stats"]
    pipe.vae.register_to_config(latents_mean=list(mean), latents_std=list(std))
    data.summary = dict(saved["summary"])
    data.latents = None if saved["latents"] is None else saved["latents"].to(data.device)
    return tuple(saved["position"])  # type: ignore[return-value]


VAE_FIELDS = ("seed", "vae_image_steps", "vae_image_batch", "vae_steps", "vae_batch", "vae_frames", "vae_lr",
              "vae_kl_weight", "vae_object_weight", "vae_edge_ring", "latent_clips")


def _vae_checkpoint(run_dir: Path, config: TrainConfig) -> dict:
    """Another run's state at the start of the denoiser stage, as this run's own."""
    saved = load_checkpoint(run_dir)
    theirs, ours = (saved or {}).get("summary", {}).get("config", {}), asdict(config)
    untouched = saved is not None and (tuple(saved["position"]) <= (3, 0) or theirs["decoder_steps"] == 0)
    if saved is None or tuple(saved["position"]) < (2, 0) or not untouched:
        raise ValueError(f"{run_dir} holds no run between encoding its latents and refining its decoder")
    differ = [name for name in VAE_FIELDS if theirs[name] != ours[name]]
    if differ:
        raise ValueError(f"{run_dir} trained its VAE with other settings: {', '.join(differ)}")
    fresh = build_untrained_pipeline(config.seed, config.width, config.layers).transformer.state_dict()
    # The VAE and encoding time is the other run's; recorded apart so "seconds" stays this run's own.
    summary = {"config": ours, "vae_from": str(run_dir), "vae_from_seconds": saved["summary"].get("seconds"),
               **{k: saved["summary"][k] for k in ("vae_loss", "latent_clips")}}
    return {**saved, "position": (2, 0), "summary": summary, "stage": None,
            "modules": {"vae": saved["modules"]["vae"], "transformer": fresh}}


def _shipped_vae(model_dir: Path, config: TrainConfig) -> dict:
    """A trained model's VAE (its decoder refined already) as this run's, from the encoding stage on:
    the encoder is frozen after the VAE stage, so its latents are the ones that model's denoiser saw."""
    shipped = model_dir / "training.json"
    if not (model_dir / "vae" / "config.json").is_file() or not shipped.is_file():
        raise ValueError(f"{model_dir} holds neither a training checkpoint nor a trained micro model")
    record, ours = json.loads(shipped.read_text()), asdict(config)
    differ = [name for name in VAE_FIELDS if name != "latent_clips" and record["config"].get(name) != ours[name]]
    if differ:
        raise ValueError(f"{model_dir} trained its VAE with other settings: {', '.join(differ)}")
    vae = AutoencoderKLWan.from_pretrained(model_dir / "vae")
    summary = {"config": ours, "vae_from": str(model_dir), "vae_from_training": record}
    fresh = build_untrained_pipeline(config.seed, config.width, config.layers).transformer.state_dict()
    return {"position": (1, 0), "modules": {"vae": vae.state_dict(), "transformer": fresh},
            "latents_stats": (vae.config.latents_mean, vae.config.latents_std), "latents": None,
            "summary": summary, "stage": None}


def saved_config(run_dir: Path) -> TrainConfig:
    """The configuration of the run whose checkpoint is in ``run_dir``."""
    saved = load_checkpoint(run_dir)
    if saved is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}: nothing to resume")
    return TrainConfig(**saved["summary"]["config"])


def save_pipeline(pipe: WanPipeline, out_dir: Path, summary: dict) -> None:
    """The pipeline without its text encoder and tokenizer (MiniLM, passed in when loading)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for shared in ("text_encoder", "tokenizer"):
        shutil.rmtree(out_dir / shared, ignore_errors=True)
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    # The words of the training captions: a served prompt with none of them gets a warning.
    (out_dir / "vocabulary.json").write_text(json.dumps(vocabulary()) + "\n")
