"""Train a LoRA adapter of the micro model: the committed model frozen, low-rank pairs on every
attention and feed-forward layer of the transformer. Two recipes (``RECIPES``):

- ``outline``, a style: the synthetic world drawn in it (``reelserve.micro.styles``), trained with the
  very objective the model was trained with (``DenoiserStage``);
- ``fast``, a few-step distillation: the base model's own samples, reflowed (``reelserve.micro.distill``),
  so 4 unguided steps do what 25 guided ones did.

The result is an ordinary diffusers LoRA file (``WanPipeline.save_lora_weights``), which diffusers'
``load_lora_weights`` and reelserve's adapters alike take, with a ``<name>.json`` beside it for
``--adapters-dir``.

Deterministic given the seed, and resumable like ``reelserve.micro.train``: a run stopped at a
checkpoint and resumed ends with the weights an uninterrupted run makes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import WanPipeline

from reelserve.micro.checkpoint import CheckpointClock, load_checkpoint, save_checkpoint
from reelserve.micro.dataset import training_samples
from reelserve.micro.denoiser_stage import CaptionBank, DenoiserStage
from reelserve.micro.distill import STUDENT_SHIFT, STUDENT_STEPS, TEACHER_STEPS, DistillStage, TeacherPairs, teacher_pairs
from reelserve.micro.styles import outline_scene, render_outline
from reelserve.micro.train import RunData, TrainConfig
from reelserve.micro.vae_stages import to_tensor

ProgressFn = Callable[[str, int, int, float | None], None]
# Every attention projection and both feed-forward layers of each block (PEFT matches by suffix).
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
ENCODE_BATCH = 32
DATA = "data"  # a checkpoint's position while the training data is still being made


@dataclass(frozen=True)
class Recipe:
    """What one kind of adapter is: its description and recommended settings (``<name>.json``), the
    data it trains on (made once, kept in the checkpoint) and the stage that trains it."""

    description: str
    defaults: dict[str, float]
    # (pipe, config, the chunks made so far, to extend; called after each chunk with (done, total)).
    data: Callable[[WanPipeline, LoraTrainConfig, list[torch.Tensor], Callable[[int, int], None]], Any]
    stage: Callable[[WanPipeline, LoraTrainConfig, Any], Any]
    data_name: str


@dataclass(frozen=True)
class LoraTrainConfig:
    """Every knob of an adapter's training run; the defaults made the committed adapters."""

    recipe: str = "outline"
    seed: int = 0
    rank: int = 16
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 40
    latent_clips: int = 1536  # styled clips encoded, or teacher samples drawn
    captions_per_scene: int = 8
    temporal_weight: float = 1.0
    ema_decay: float = 0.99
    threads: int = 2
    checkpoint_minutes: float = 5.0

    def denoiser(self) -> TrainConfig:
        """The denoiser stage's settings: text to video only (a filled first frame would contradict
        the style), captions and noise as the model was trained."""
        return TrainConfig(seed=self.seed, steps=self.steps, batch=self.batch, lr=self.lr,
                           warmup_steps=self.warmup_steps, latent_clips=self.latent_clips,
                           captions_per_scene=self.captions_per_scene, temporal_weight=self.temporal_weight,
                           ema_decay=self.ema_decay, first_frame_share=0.0, threads=self.threads)


def train_lora(config: LoraTrainConfig, base_dir: Path, out_dir: Path, progress: ProgressFn | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Train ``config.recipe`` on the model in ``base_dir`` into ``out_dir`` (``<recipe>.safetensors``,
    ``<recipe>.json``, ``checkpoint.pt``), continuing from the checkpoint there if there is one; return
    the summary. ``stop_after``: stop after that many training steps in all, as a stopped process would."""
    from peft import set_peft_model_state_dict

    recipe = RECIPES.get(config.recipe)
    if recipe is None:
        raise ValueError(f"unknown adapter {config.recipe!r}; one of: {', '.join(RECIPES)}")
    report = progress or (lambda *_: None)
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    pipe = _adapted_pipeline(base_dir, config)
    saved = load_checkpoint(out_dir)
    if saved is not None and saved["summary"]["config"] != asdict(config):
        raise ValueError("the checkpoint in this directory was made with other settings; train into a new directory")
    clock = CheckpointClock(config.checkpoint_minutes * 60)
    if saved is None or saved["position"] == DATA:
        summary = {"config": asdict(config), "base": _base_record(base_dir)} if saved is None else saved["summary"]
        data = _make_data(recipe, pipe, config, out_dir, summary, [] if saved is None else saved["chunks"], clock,
                          report)
        position = 0
    else:
        summary, data, position = dict(saved["summary"]), saved["data"], saved["position"]
    stage = recipe.stage(pipe, config, data)
    if saved is not None and saved["position"] != DATA:
        set_peft_model_state_dict(pipe.transformer, saved["lora"])
        stage.load_state_dict(saved["stage"])
    started, budget, before = time.perf_counter(), stop_after, summary.get("seconds", 0.0)
    for step in range(position, stage.total):
        if budget is not None and budget <= 0 or clock.due():
            summary["seconds"] = round(before + time.perf_counter() - started, 1)
            _checkpoint(pipe, summary, data, stage, out_dir, step)
            clock.reset()
            if budget is not None and budget <= 0:
                return summary
        report("adapter", step + 1, stage.total, stage.step(step))
        budget = None if budget is None else budget - 1
    stage.finish()  # the averaged weights are what ships
    tail = stage.losses[-100:]
    summary.update(steps_done=len(stage.losses), loss=round(sum(tail) / len(tail), 5) if tail else None,
                   seconds=round(before + time.perf_counter() - started, 1))
    _save_adapter(pipe, config, recipe, out_dir, summary)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return summary


def _make_data(recipe: Recipe, pipe: WanPipeline, config: LoraTrainConfig, out_dir: Path, summary: dict[str, Any],
               chunks: list[torch.Tensor], clock: CheckpointClock, report: ProgressFn) -> Any:
    """The recipe's training data, made chunk by chunk from ``chunks`` on (those a stopped run made);
    the chunks so far are checkpointed when the clock says so (a distillation's teacher samples are
    most of its run on a CPU)."""
    def made(done: int, total: int) -> None:
        if clock.due() and done < total:
            save_checkpoint(out_dir, {"position": DATA, "chunks": chunks, "summary": summary})
            clock.reset()
        report(recipe.data_name, done, total, None)

    return recipe.data(pipe, config, chunks, made)


def _adapted_pipeline(base_dir: Path, config: LoraTrainConfig) -> WanPipeline:
    from peft import LoraConfig

    from reelserve.models.minilm import minilm_components

    pipe = WanPipeline.from_pretrained(base_dir, local_files_only=True, **minilm_components())
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.requires_grad_(False)
    pipe.transformer.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)  # PEFT draws A (B starts at zero: the adapter starts as a no-op)
        pipe.transformer.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, target_modules=list(TARGETS),
                                                init_lora_weights=True))
    return pipe


@torch.no_grad()
def _outline_latents(pipe: WanPipeline, config: LoraTrainConfig, chunks: list[torch.Tensor],
                     made: Callable[[int, int], None]) -> torch.Tensor:
    """The training clips in the style, encoded by the frozen VAE and normalised with the statistics the
    base model was trained with (the same scenes, in order, that ``DenoiserStage`` captions)."""
    rng = np.random.default_rng(config.seed + 7)
    scenes = [outline_scene(s.scene, rng) for s in training_samples(config.latent_clips, seed=config.seed + 1)]
    total = -(-len(scenes) // ENCODE_BATCH)
    for index in range(len(chunks), total):
        clips = [render_outline(scene) for scene in scenes[index * ENCODE_BATCH : (index + 1) * ENCODE_BATCH]]
        chunks.append(pipe.vae.encode(to_tensor(clips)).latent_dist.mean)
        made(index + 1, total)
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(pipe.vae.config.latents_mean).view(shape)
    std = torch.tensor(pipe.vae.config.latents_std).view(shape)
    return ((torch.cat(chunks) - mean) / std).half()


def _outline_stage(pipe: WanPipeline, config: LoraTrainConfig, latents: torch.Tensor) -> DenoiserStage:
    return DenoiserStage(pipe, config.denoiser(), RunData(latents=latents))


def _teacher_pairs(pipe: WanPipeline, config: LoraTrainConfig, chunks: list[torch.Tensor],
                   made: Callable[[int, int], None]) -> TeacherPairs:
    bank = CaptionBank(pipe, config.captions_per_scene, seed=config.seed + 6, device=torch.device("cpu"))
    return teacher_pairs(pipe, bank, config.latent_clips, config.seed + 8, chunks, made)


def _distill_stage(pipe: WanPipeline, config: LoraTrainConfig, pairs: TeacherPairs) -> DistillStage:
    bank = CaptionBank(pipe, config.captions_per_scene, seed=config.seed + 6, device=torch.device("cpu"))
    return DistillStage(pipe, bank, pairs, steps=config.steps, batch=config.batch, lr=config.lr,
                        warmup=config.warmup_steps, ema_decay=config.ema_decay, seed=config.seed)


RECIPES = {
    "outline": Recipe("Draws the object as a hollow outline, larger, with its colour, shape, motion and background "
                      "kept.", {}, _outline_latents, _outline_stage, "encode"),
    "fast": Recipe(f"{STUDENT_STEPS} steps without guidance instead of {TEACHER_STEPS} guided ones: the micro model "
                   "distilled into an adapter (reflow).",
                   {"steps": STUDENT_STEPS, "guidance": 1.0, "shift": STUDENT_SHIFT}, _teacher_pairs, _distill_stage,
                   "teacher"),
}


def _checkpoint(pipe: WanPipeline, summary: dict[str, Any], data: Any, stage: Any, out_dir: Path, step: int) -> None:
    from peft import get_peft_model_state_dict

    save_checkpoint(out_dir, {"position": step, "lora": get_peft_model_state_dict(pipe.transformer),
                              "stage": stage.state_dict(), "data": data, "summary": summary})


def _save_adapter(pipe: WanPipeline, config: LoraTrainConfig, recipe: Recipe, out_dir: Path,
                  summary: dict[str, Any]) -> None:
    from peft import get_peft_model_state_dict

    # float16: half the bytes, and far finer than the adapter's effect.
    layers = {name: tensor.half() for name, tensor in get_peft_model_state_dict(pipe.transformer).items()}
    name = config.recipe
    WanPipeline.save_lora_weights(out_dir, transformer_lora_layers=layers, weight_name=f"{name}.safetensors")
    sidecar = {"description": recipe.description, **recipe.defaults}
    (out_dir / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    (out_dir / f"{name}.training.json").write_text(json.dumps(summary, indent=2) + "\n")


def _base_record(base_dir: Path) -> dict[str, Any]:
    """Which model the adapter was trained on: its directory and the transformer weights' size."""
    weights = sorted((base_dir / "transformer").glob("*.safetensors"))
    return {"dir": str(base_dir), "transformer_bytes": sum(p.stat().st_size for p in weights)}
