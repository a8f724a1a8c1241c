"""The space the denoising loop works in: a Wan VAE's latents, shifted and scaled by its configured
per-channel mean and std. Written once, in the exact float operations diffusers' Wan pipelines use,
so a video decoded here equals theirs bit for bit."""

from __future__ import annotations

from typing import Any

import torch


def _stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / std), shaped (1, C, 1, 1, 1), on ``like``'s device and dtype."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, inverse_std


def normalise(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents into the loop's space (as ``WanImageToVideoPipeline.prepare_latents``)."""
    mean, inverse_std = _stats(vae, latents)
    return (latents - mean) * inverse_std


def denormalise(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The loop's latents back to what the VAE decodes (as ``WanPipeline.__call__``)."""
    mean, inverse_std = _stats(vae, latents)
    return latents / inverse_std + mean
