"""Train the micro model from nothing: the VAE first, then the text encoder and transformer in
latent space with Wan's flow-matching objective. Deterministic given ``TrainConfig.seed``.

Output is an ordinary diffusers pipeline directory (``save_pretrained``, safetensors), loadable
with ``WanPipeline.from_pretrained`` like any Wan checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanPipeline
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from reelserve.micro.architecture import FLOW_SHIFT, MAX_SEQUENCE_LENGTH, build_untrained_pipeline
from reelserve.micro.captions import TRAIN_TEMPLATES, caption
from reelserve.micro.dataset import Sample, training_samples
from reelserve.micro.world import BACKGROUNDS, FRAMES

# (stage, step, total steps, latest loss or None)
ProgressFn = Callable[[str, int, int, float | None], None]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; the defaults are the committed model's run."""

    seed: int = 0
    threads: int = 2
    # Stage one starts on single frames: a frame costs about what a frame of a clip does, but 16
    # unrelated frames show the decoder far more colours and shapes per second than 4 clips.
    vae_image_steps: int = 500
    vae_image_batch: int = 16
    vae_steps: int = 350  # then whole clips, for the temporal layers the first frame never uses
    vae_batch: int = 4
    # Full length: a VAE trained on shorter clips lets its causal cache drift on later frames.
    vae_frames: int = 17
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # The object covers ~7 % of a frame; unweighted, the loss is met by painting the background.
    # At 4 one colour (green) was still drawn as background after 500 image steps; at 8 all six were learned.
    vae_object_weight: float = 8.0
    latent_clips: int = 3200
    steps: int = 3000
    batch: int = 32
    lr: float = 8e-4
    warmup_steps: int = 100
    # Noise levels: uniform, then shifted exactly as the sampler's schedule is, so training sees the
    # high-noise steps where the sampler decides colour and place as often as sampling visits them.
    # (A logit-normal draw puts only 1.4 % of steps above σ = 0.9; a model trained that way read
    # colour off the half-denoised picture instead of the prompt and followed the seed.)
    noise_shift: float = FLOW_SHIFT
    caption_dropout: float = 0.1  # an empty caption, as the pipeline's default negative prompt
    unknown_word_rate: float = 0.05  # teaches the model to shrug off words it does not know
    ema_decay: float = 0.998
    checkpoint_every: int = 250
    # Stage three: the decoder alone, encoder frozen, so the latents the denoiser learned stay valid.
    decoder_steps: int = 150
    decoder_lr: float = 1e-3
    # Generated latents are never exactly on the encoder's manifold; noise up to this fraction of
    # each channel's std teaches the decoder to draw clean frames from nearly-right latents.
    decoder_latent_noise: float = 0.3


def train(config: TrainConfig, out_dir: Path, progress: ProgressFn | None = None, vae_from: Path | None = None) -> dict:
    """Train and save the pipeline to ``out_dir``; return a summary (also written as training.json).

    The transformer stage saves a checkpoint every ``checkpoint_every`` steps, so a run cut short
    still leaves a usable model. ``vae_from`` (a directory an earlier run wrote) skips stage one
    and starts from that run's VAE; its decoder must not have been refined yet.
    """
    report = progress or (lambda *_: None)
    torch.set_num_threads(config.threads)
    # Subnormal floats are handled in microcode on x86 and can slow backward passes many times over;
    # flushing them costs nothing measurable at this model's precision needs.
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    pipe = build_untrained_pipeline(config.seed)
    started = time.perf_counter()
    summary: dict = {"config": asdict(config)}

    if vae_from is None:
        summary["vae_loss"] = _train_vae(pipe, config, report)
        summary["vae_seconds"] = round(time.perf_counter() - started, 1)
        _save(pipe, out_dir, summary)  # lets a person look at reconstructions while stage two runs
    else:
        pipe.vae = AutoencoderKLWan.from_pretrained(vae_from / "vae").eval()
        summary.update(vae_from=str(vae_from), vae_seconds=0.0)
    latents, samples = _encode_dataset(pipe, config, report)
    summary["latent_stats_seconds"] = round(time.perf_counter() - started - summary["vae_seconds"], 1)

    def checkpoint(step_summary: dict) -> None:
        summary.update(step_summary, seconds=round(time.perf_counter() - started, 1))
        _save(pipe, out_dir, summary)

    _train_denoiser(pipe, latents, samples, config, report, checkpoint)
    summary["decoder_loss"] = refine_decoder(pipe, config, report)
    checkpoint({})
    return summary


def refine_decoder(pipe: WanPipeline, config: TrainConfig, report: ProgressFn) -> float:
    """Train the VAE decoder further with the encoder frozen.

    Colour is the last thing the VAE learns; this buys it more steps without touching the latent
    space, so it can also run on a finished model. ``pipe`` must hold the shipped (averaged) weights.
    """
    vae = pipe.vae
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.decoder_lr, weight_decay=0.0)
    schedule = _warmup_cosine(optimizer, min(20, config.decoder_steps // 10), config.decoder_steps)
    rng = np.random.default_rng(config.seed + 4)
    generator = torch.Generator().manual_seed(config.seed + 5)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    loss_value = float("nan")
    vae.train()
    for step in range(config.decoder_steps):
        samples = training_samples(config.vae_batch, seed=int(rng.integers(2**31)))
        clips = _to_tensor([s.render() for s in samples])
        weight = 1.0 + config.vae_object_weight * _object_mask(clips, samples)
        with torch.no_grad():
            latents = vae.encode(clips).latent_dist.mean
        level = torch.rand(len(samples), 1, 1, 1, 1, generator=generator) * config.decoder_latent_noise
        latents = latents + level * std * torch.randn(latents.shape, generator=generator)
        error = _decode_unclamped(vae, latents) - clips
        loss = (weight * (error.abs() + error**2)).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        report("decoder", step + 1, config.decoder_steps, loss_value)
    vae.requires_grad_(True)
    vae.eval()
    return loss_value


def _train_vae(pipe: WanPipeline, config: TrainConfig, report: ProgressFn) -> float:
    """Single frames for ``vae_image_steps``, then whole clips, under one learning-rate schedule."""
    vae = pipe.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    total = config.vae_image_steps + config.vae_steps
    schedule = _warmup_cosine(optimizer, min(30, total // 10), total)
    rng = np.random.default_rng(config.seed)
    loss_value = float("nan")
    for step in range(total):
        if step < config.vae_image_steps:
            samples = training_samples(config.vae_image_batch, seed=int(rng.integers(2**31)))
            frames = [int(i) for i in rng.integers(FRAMES, size=len(samples))]
            clips = _to_tensor([s.render()[i : i + 1] for s, i in zip(samples, frames, strict=True)])
        else:
            samples = training_samples(config.vae_batch, seed=int(rng.integers(2**31)))
            start = int(rng.integers(FRAMES - config.vae_frames + 1))
            clips = _to_tensor([s.render()[start : start + config.vae_frames] for s in samples])
        weight = 1.0 + config.vae_object_weight * _object_mask(clips, samples)
        posterior = vae.encode(clips).latent_dist
        # The mean, not a sample: at init the posterior's noise drowns the signal and the decoder
        # learns a blur. The diffusion stage normalises the latents' scale anyway.
        decoded = _decode_unclamped(vae, posterior.mean)
        error = decoded - clips
        loss = (weight * (error.abs() + error**2)).mean() / weight.mean()
        loss = loss + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        report("vae", step + 1, total, loss_value)
    vae.eval()
    return loss_value


def _decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode`` without its final clamp to [-1, 1].

    The clamp has zero gradient outside the range: one large early step that pushes every output
    below -1 leaves the decoder with no gradient at all, stuck on a black frame. This mirrors
    diffusers' ``AutoencoderKLWan._decode`` (frame by frame through the causal cache).
    """
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def _object_mask(clips: torch.Tensor, samples: list[Sample]) -> torch.Tensor:
    """(B, 1, T, H, W): 1 where a pixel differs from its clip's plain background."""
    backgrounds = _to_tensor([np.array([[[BACKGROUNDS[s.scene.background]]]], dtype=np.uint8) for s in samples])
    return ((clips - backgrounds).abs().amax(dim=1, keepdim=True) > 0.02).float()


@torch.no_grad()
def _encode_dataset(pipe: WanPipeline, config: TrainConfig, report: ProgressFn) -> tuple[torch.Tensor, list[Sample]]:
    """Encode the training clips once; record the latents' per-channel statistics in the VAE
    config, where the pipeline reads them to un-normalise before decoding."""
    samples = training_samples(config.latent_clips, seed=config.seed + 1)
    chunks = []
    for first in range(0, len(samples), 16):
        batch = samples[first : first + 16]
        chunks.append(pipe.vae.encode(_to_tensor([s.render() for s in batch])).latent_dist.mean)
        report("encode", first + len(batch), len(samples), None)
    latents = torch.cat(chunks)
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    pipe.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    normalised = (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    return normalised, samples


def _train_denoiser(
    pipe: WanPipeline,
    latents: torch.Tensor,
    samples: list[Sample],
    config: TrainConfig,
    report: ProgressFn,
    checkpoint: Callable[[dict], None],
) -> None:
    text_encoder, transformer = pipe.text_encoder.train(), pipe.transformer.train()
    params = [*text_encoder.parameters(), *transformer.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    schedule = _warmup_cosine(optimizer, config.warmup_steps, config.steps)
    averaged = [
        AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        for module in (text_encoder, transformer)
    ]
    rng = np.random.default_rng(config.seed + 2)
    generator = torch.Generator().manual_seed(config.seed + 3)
    losses: list[float] = []
    for step in range(config.steps):
        rows = rng.integers(len(samples), size=config.batch)
        x0 = latents[torch.from_numpy(rows)]
        context = _encode_captions(pipe, _captions(rng, [samples[r] for r in rows], config), config, generator)
        uniform = torch.rand(config.batch, generator=generator)
        sigma = config.noise_shift * uniform / (1 + (config.noise_shift - 1) * uniform)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        velocity = transformer(noisy, sigma * 1000, context, return_dict=False)[0]
        loss = ((velocity - (noise - x0)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        for average, module in zip(averaged, (text_encoder, transformer), strict=True):
            average.update_parameters(module)
        losses.append(loss.item())
        report("denoiser", step + 1, config.steps, losses[-1])
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _swap_in_averages(pipe, averaged, lambda done=step + 1: checkpoint(_loss_summary(losses, done)))
    # From here on the pipeline holds what ships: the averaged weights.
    pipe.text_encoder, pipe.transformer = (a.module.eval() for a in averaged)


def _captions(rng: np.random.Generator, rows: list[Sample], config: TrainConfig) -> list[str]:
    texts = []
    for sample in rows:
        scene = sample.scene
        if rng.random() < config.caption_dropout:
            texts.append("")
        else:
            texts.append(caption(rng, scene.shape, scene.color, scene.motion, scene.background, TRAIN_TEMPLATES))
    return texts


def _encode_captions(
    pipe: WanPipeline, texts: list[str], config: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """Text embeddings exactly as the pipeline makes them: padding positions zeroed."""
    tokens = pipe.tokenizer(
        texts, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True, return_tensors="pt"
    )
    ids, mask = tokens.input_ids, tokens.attention_mask
    words = ids > 2  # pad, eos and unk are ids 0-2
    dropped = words & (torch.rand(ids.shape, generator=generator) < config.unknown_word_rate)
    ids = torch.where(dropped, torch.full_like(ids, pipe.tokenizer.unk_token_id), ids)
    hidden = pipe.text_encoder(ids, mask).last_hidden_state
    return hidden * mask.unsqueeze(-1)


def _swap_in_averages(pipe: WanPipeline, averaged: list[AveragedModel], action: Callable[[], None]) -> None:
    """Run ``action`` with the pipeline holding the averaged weights, then restore the live ones."""
    live = [pipe.text_encoder, pipe.transformer]
    pipe.text_encoder, pipe.transformer = (a.module.eval() for a in averaged)
    try:
        action()
    finally:
        pipe.text_encoder, pipe.transformer = live


def _loss_summary(losses: list[float], step: int) -> dict:
    tail = losses[-100:]
    return {"denoiser_steps_done": step, "denoiser_loss": round(sum(tail) / len(tail), 5)}


def _save(pipe: WanPipeline, out_dir: Path, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")


def _to_tensor(clips: list[np.ndarray]) -> torch.Tensor:
    """uint8 (T, H, W, 3) clips to a float batch (B, 3, T, H, W) in [-1, 1]."""
    array = np.stack(clips).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 4, 1, 2, 3).contiguous()


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
