"""Live previews: a running row's current estimate of its clean latents turned into a few small
frames without the VAE, by a linear map from a latent pixel's channels to its colour.

The map is fitted once per model, at load, from the model's own VAE (``fit_preview_map``): clips of
smooth random colour fields are encoded, and a least-squares fit maps each latent pixel (in the
normalised space the denoising loop works in) to the mean colour of the image patch it encodes.
Applying it is one small matrix product per latent frame: microseconds for the micro model, well
under a millisecond for Wan2.2-TI2V-5B's 48 x 44 x 80 latents, against a VAE decode that costs as
much as several denoising steps. It knows colour and layout, not fine detail: a glimpse of where
the video is going, as ComfyUI's latent previews are.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from reelserve.models.latent_space import denormalise, normalise

# Clips of each kind the map is fitted on, and their latent size: every latent pixel is one sample
# (2 x 8 clips of 2 x 8 x 8 latent pixels: 2048 samples for at most 49 unknowns per colour).
FIT_CLIPS = 8
FIT_LATENT_SIDE = 8
FIT_LATENT_FRAMES = 2
FIT_SEED = 0
# A preview's longer side at most (pixels), and its frames at most.
PREVIEW_MAX_SIDE = 256
PREVIEW_MAX_FRAMES = 8
WEBP_QUALITY = 70


@dataclass(frozen=True)
class PreviewMap:
    """Latent channels -> RGB in [0, 1]: ``rgb = latents · weight + bias`` per latent pixel.

    :param fit_error: the fit's mean absolute error on its own samples, in [0, 1] colour units.
    """

    weight: np.ndarray  # (C, 3)
    bias: np.ndarray  # (3,)
    fit_error: float

    def to_rgb(self, latents: torch.Tensor) -> np.ndarray:
        """(1, C, F, H, W) latents -> (F, H, W, 3) uint8 frames, one per latent frame."""
        z = latents[0].detach().to("cpu", torch.float32).permute(1, 2, 3, 0).numpy()  # (F, H, W, C)
        rgb = z @ self.weight + self.bias
        return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def fit_preview_map(pipeline: Any) -> PreviewMap:
    """The map for ``pipeline``'s VAE, fitted on what its decoder makes of two kinds of latents:
    random ones (the noise the loop starts from) and encoded flat-colour clips with a block of
    another colour (clean ones, like the x0 estimates late in a run). Measured on the micro model,
    either kind alone leaves a bias the other corrects (docs/benchmarks.md, live previews)."""
    vae = pipeline.vae
    spatial, temporal = int(pipeline.vae_scale_factor_spatial), int(pipeline.vae_scale_factor_temporal)
    side, frames = FIT_LATENT_SIDE * spatial, 1 + temporal * (FIT_LATENT_FRAMES - 1)
    generator = torch.Generator().manual_seed(FIT_SEED)
    channels = int(vae.config.z_dim)
    samples: list[tuple[torch.Tensor, np.ndarray]] = []
    with torch.inference_mode():
        for _ in range(FIT_CLIPS):
            noise = torch.randn(1, channels, FIT_LATENT_FRAMES, FIT_LATENT_SIDE, FIT_LATENT_SIDE, generator=generator)
            samples.append((noise, _decoded(vae, noise, spatial, temporal)))
            clip = _colour_block_clip(generator, side, frames).to(vae.device, vae.dtype)
            clean = normalise(vae, vae.encode(clip).latent_dist.mode()).to("cpu", torch.float32)
            samples.append((clean, _decoded(vae, clean, spatial, temporal)))
    x = np.concatenate([z[0].permute(1, 2, 3, 0).reshape(-1, channels).numpy() for z, _ in samples])
    y = np.concatenate([rgb.reshape(-1, 3) for _, rgb in samples])
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    # A little ridge: a random-weights test VAE may leave channels nearly collinear.
    gram = design.T @ design + 1e-3 * np.eye(design.shape[1])
    solution = np.linalg.solve(gram, design.T @ y.astype(np.float64))
    error = float(np.abs(np.clip(design @ solution, 0, 1) - y).mean())
    return PreviewMap(weight=solution[:-1].astype(np.float32), bias=solution[-1].astype(np.float32), fit_error=error)


def _colour_block_clip(generator: torch.Generator, side: int, frames: int) -> torch.Tensor:
    """(1, 3, frames, side, side) in [-1, 1]: a flat background with a block of another colour."""
    image = torch.ones(3, side, side) * torch.rand(3, 1, 1, generator=generator)
    block = side * 3 // 8
    top, left = torch.randint(0, side - block + 1, (2,), generator=generator).tolist()
    image[:, top : top + block, left : left + block] = torch.rand(3, 1, 1, generator=generator)
    return image.unsqueeze(1).expand(3, frames, side, side).unsqueeze(0) * 2 - 1


def _decoded(vae: Any, latents: torch.Tensor, spatial: int, temporal: int) -> np.ndarray:
    """What each latent pixel decodes to: (F, h, w, 3) in [0, 1], the mean colour of its patch over
    the frames it stands for (latent frame 0 is frame 0; frame k > 0 is frames temporal·(k-1)+1 .. temporal·k)."""
    video = vae.decode(denormalise(vae, latents.to(vae.device, vae.dtype)), return_dict=False)[0]
    video = ((video.to("cpu", torch.float32)[0] + 1) / 2).clamp(0, 1)  # (3, T, H, W)
    pooled = torch.nn.functional.avg_pool2d(video.permute(1, 0, 2, 3), spatial)  # (T, 3, h, w)
    groups = [pooled[:1]] + [pooled[temporal * (k - 1) + 1 : temporal * k + 1] for k in range(1, latents.shape[2])]
    return torch.stack([group.mean(0) for group in groups]).permute(0, 2, 3, 1).numpy()


def preview_image(frames: np.ndarray, fps: float, size: tuple[int, int]) -> bytes:
    """(F, h, w, 3) uint8 latent-resolution frames -> an animated WebP (a still one for one frame), its
    longer side at most ``PREVIEW_MAX_SIDE`` and never above the video's own ``size`` (width, height).
    ``fps``: the preview's frames per second (a latent frame stands for several of the video's)."""
    width, height = size
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    out = (max(1, round(width * scale)), max(1, round(height * scale)))
    step = max(1, math.ceil(len(frames) / PREVIEW_MAX_FRAMES))
    images = [Image.fromarray(frame).resize(out, Image.Resampling.BILINEAR) for frame in frames[::step]]
    buffer = io.BytesIO()
    duration = max(20, round(1000 * step / fps))
    images[0].save(buffer, format="WEBP", save_all=len(images) > 1, append_images=images[1:], duration=duration,
                   loop=0, quality=WEBP_QUALITY)
    return buffer.getvalue()
