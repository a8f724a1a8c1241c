"""The training stages that touch the VAE: train it, encode the training clips once, and refine the
decoder at the end. Each is a resumable ``Stage`` (``reelserve.micro.stage``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanPipeline

from reelserve.micro.checkpoint import restore_rng, rng_state
from reelserve.micro.dataset import Sample, training_samples
from reelserve.micro.stage import optimiser_state, restore_optimiser, warmup_cosine
from reelserve.micro.world import BACKGROUNDS, FRAMES

if TYPE_CHECKING:
    from reelserve.micro.train import RunData, TrainConfig

ENCODE_BATCH = 16


class VaeStage:
    """Single frames for ``vae_image_steps`` (a frame costs about what a frame of a clip does, but
    16 unrelated frames show the decoder far more colours and shapes), then whole clips for the
    temporal layers the first frame never uses, under one learning-rate schedule."""

    name = "vae"

    def __init__(self, pipe: WanPipeline, config: TrainConfig, data: RunData) -> None:
        self.vae, self.config, self.device = pipe.vae.train(), config, data.device
        self.total = config.vae_image_steps + config.vae_steps
        self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
        self.schedule = warmup_cosine(self.optimizer, min(30, self.total // 10), self.total)
        self.rng = np.random.default_rng(config.seed)
        self.losses: list[float] = []

    def step(self, index: int) -> float:
        config = self.config
        if index < config.vae_image_steps:
            samples = training_samples(config.vae_image_batch, seed=int(self.rng.integers(2**31)))
            frames = [int(i) for i in self.rng.integers(FRAMES, size=len(samples))]
            clips = to_tensor([s.render()[i : i + 1] for s, i in zip(samples, frames, strict=True)])
        else:
            samples = training_samples(config.vae_batch, seed=int(self.rng.integers(2**31)))
            start = int(self.rng.integers(FRAMES - config.vae_frames + 1))
            clips = to_tensor([s.render()[start : start + config.vae_frames] for s in samples])
        clips = clips.to(self.device)
        weight = 1.0 + config.vae_object_weight * object_mask(clips, samples, config.vae_edge_ring)
        posterior = self.vae.encode(clips).latent_dist
        # The mean, not a sample: at init the posterior's noise drowns the signal and the decoder
        # learns a blur. The diffusion stage normalises the latents' scale anyway.
        error = decode_unclamped(self.vae, posterior.mean) - clips
        loss = (weight * (error.abs() + error**2)).mean() / weight.mean()
        loss = loss + config.vae_kl_weight * posterior.kl().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.losses.append(loss.item())
        return self.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        return {**optimiser_state(self.optimizer, self.schedule), "rng": rng_state(self.rng), "losses": self.losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_optimiser(self.optimizer, self.schedule, state)
        restore_rng(self.rng, state["rng"])
        self.losses = list(state["losses"])

    def finish(self) -> dict[str, Any]:
        self.vae.eval()
        return {"vae_loss": round(self.losses[-1], 5) if self.losses else None}


class EncodeStage:
    """Encode the training clips once (posterior mean); record the latents' per-channel statistics
    in the VAE config, where the pipeline reads them to un-normalise before decoding. The normalised
    latents are kept in float16, in memory and in checkpoints alike."""

    name = "encode"

    def __init__(self, pipe: WanPipeline, config: TrainConfig, data: RunData) -> None:
        self.vae, self.data, self.device = pipe.vae, data, data.device
        self.samples = training_samples(config.latent_clips, seed=config.seed + 1)
        self.total = -(-len(self.samples) // ENCODE_BATCH)
        self.chunks: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, index: int) -> None:
        batch = self.samples[index * ENCODE_BATCH : (index + 1) * ENCODE_BATCH]
        clips = to_tensor([s.render() for s in batch]).to(self.device)
        self.chunks.append(self.vae.encode(clips).latent_dist.mean.cpu())

    def state_dict(self) -> dict[str, Any]:
        return {"chunks": self.chunks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chunks = list(state["chunks"])

    def finish(self) -> dict[str, Any]:
        latents = torch.cat(self.chunks)
        mean = latents.mean(dim=(0, 2, 3, 4))
        std = latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
        self.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
        shape = (1, -1, 1, 1, 1)
        self.data.latents = ((latents - mean.view(shape)) / std.view(shape)).half().to(self.device)
        self.chunks = []
        return {"latent_clips": len(latents)}


class DecoderStage:
    """The decoder alone, encoder frozen, so the latent space the denoiser learned stays valid.
    Latents get Gaussian noise of up to ``decoder_latent_noise`` of each channel's std, so the decoder
    learns to draw clean frames from the nearly-right latents a sampler produces."""

    name = "decoder"

    def __init__(self, pipe: WanPipeline, config: TrainConfig, data: RunData) -> None:
        self.vae, self.config, self.device = pipe.vae, config, data.device
        self.total = config.decoder_steps
        self.vae.encoder.requires_grad_(False)
        self.vae.quant_conv.requires_grad_(False)
        self.params = [*self.vae.post_quant_conv.parameters(), *self.vae.decoder.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.decoder_lr, weight_decay=0.0)
        self.schedule = warmup_cosine(self.optimizer, min(20, self.total // 10), self.total)
        self.rng = np.random.default_rng(config.seed + 4)
        self.generator = torch.Generator().manual_seed(config.seed + 5)
        self.std = torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1).to(self.device)
        self.losses: list[float] = []
        self.vae.train()

    def step(self, index: int) -> float:
        samples = training_samples(self.config.vae_batch, seed=int(self.rng.integers(2**31)))
        clips = to_tensor([s.render() for s in samples]).to(self.device)
        weight = 1.0 + self.config.vae_object_weight * object_mask(clips, samples, self.config.vae_edge_ring)
        with torch.no_grad():
            latents = self.vae.encode(clips).latent_dist.mean
        level = torch.rand(len(samples), 1, 1, 1, 1, generator=self.generator) * self.config.decoder_latent_noise
        noise = torch.randn(latents.shape, generator=self.generator)
        latents = latents + level.to(self.device) * self.std * noise.to(self.device)
        error = decode_unclamped(self.vae, latents) - clips
        loss = (weight * (error.abs() + error**2)).mean() / weight.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.losses.append(loss.item())
        return self.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        return {**optimiser_state(self.optimizer, self.schedule), "rng": rng_state(self.rng),
                "generator": self.generator.get_state(), "losses": self.losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_optimiser(self.optimizer, self.schedule, state)
        restore_rng(self.rng, state["rng"])
        self.generator.set_state(state["generator"])
        self.losses = list(state["losses"])

    def finish(self) -> dict[str, Any]:
        self.vae.requires_grad_(True)
        self.vae.eval()
        return {"decoder_loss": round(self.losses[-1], 5) if self.losses else None}


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode`` without its final clamp to [-1, 1].

    The clamp has zero gradient outside the range: one large early step that pushes every output
    below -1 leaves the decoder with no gradient at all, stuck on a black frame. This mirrors
    diffusers' ``AutoencoderKLWan._decode`` (frame by frame through the causal cache, then the
    2x2 unpatchify of the Wan2.2-TI2V layout).
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0))
    vae.clear_cache()
    out = torch.cat(frames, dim=2)
    return unpatchify(out, vae.config.patch_size) if vae.config.patch_size is not None else out


def object_mask(clips: torch.Tensor, samples: list[Sample], ring: int = 0) -> torch.Tensor:
    """(B, 1, T, H, W): 1 where a pixel differs from its clip's plain background, or lies within
    ``ring`` pixels of one that does."""
    backgrounds = to_tensor([np.array([[[BACKGROUNDS[s.scene.background]]]], dtype=np.uint8) for s in samples])
    backgrounds = backgrounds.to(clips.device)
    mask = ((clips - backgrounds).abs().amax(dim=1, keepdim=True) > 0.02).float()
    if ring <= 0:
        return mask
    side = 2 * ring + 1
    return torch.nn.functional.max_pool3d(mask, (1, side, side), stride=1, padding=(0, ring, ring))


def to_tensor(clips: list[np.ndarray]) -> torch.Tensor:
    """uint8 (T, H, W, 3) clips to a float batch (B, 3, T, H, W) in [-1, 1]."""
    array = np.stack(clips).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 4, 1, 2, 3).contiguous()
