"""How a Wan model takes an image (image to video), read off the loaded pipeline. Three kinds:

* ``TextOnly``: none (Wan2.1-style ``tiny``, Wan2.2-T2V-A14B): a row with an image is refused.
* ``FirstFrame`` (Wan2.2-TI2V-5B, micro: ``expand_timesteps``): the image's latents, (1, C, 1, h, w),
  stand in for the row's first latent frame at every step, at timestep 0, and in the video; a row
  without an image is text to video.
* ``ChannelConcat`` (Wan2.2-I2V-A14B: transformer ``in_channels`` = 2 x VAE ``z_dim`` + the VAE's
  temporal stride): the condition, (1, 4 + C, F, h, w), a mask of the frames given (first latent frame
  1, the rest 0; one channel per video frame of a latent frame) and the latents of the image followed
  by zero (mid-grey) frames, joins the row's latents on the channel axis at every step. The latents
  are the whole video; every row needs an image.

Each builds its condition as ``WanImageToVideoPipeline.prepare_latents`` does (no ``last_image``) and
shows it to the transformer as ``WanImageToVideoPipeline.__call__`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from reelserve.models.family import Row
from reelserve.models.latent_space import normalise
from reelserve.schemas import GenerationParams


class TextOnly:
    """A model that takes no image."""

    name = "none"

    def noise_channels(self, pipeline: Any) -> int:
        """Channels of a row's latents (its seed's noise): ``WanPipeline.__call__``'s ``in_channels``."""
        return int(_transformer(pipeline).config.in_channels)

    def check(self, pipeline: Any, key: str, params: GenerationParams,
              condition: torch.Tensor | None) -> None:
        """Raise ``ValueError`` when ``condition`` (None: no image) cannot start row ``key``."""
        if condition is not None:
            raise ValueError(f"row {key}: this model takes no first frame (text to video only); the Wan2.2 "
                             "TI2V (expand_timesteps) and I2V (channel concat) layouts do")

    def encode(self, pipeline: Any, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
        raise ValueError("this model takes no first frame (text to video only)")

    def model_input(self, rows: list[Row]) -> torch.Tensor:
        """The rows' latents as the transformer takes them, float32, one batch."""
        return torch.cat([self.video_latents(row) for row in rows])

    def timestep(self, rows: list[Row], timesteps: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The transformer's ``timestep`` for the rows at ``timesteps`` (one each) and input ``shape``."""
        return timesteps

    def video_latents(self, row: Row, latents: torch.Tensor | None = None) -> torch.Tensor:
        """``latents`` (the row's own by default) as the video they decode to."""
        return row.latents if latents is None else latents


class FirstFrame(TextOnly):
    """Wan2.2 TI2V's ``expand_timesteps``: the image is the first latent frame, at timestep 0."""

    name = "first frame"

    def check(self, pipeline: Any, key: str, params: GenerationParams,
              condition: torch.Tensor | None) -> None:
        pass  # with or without an image

    def encode(self, pipeline: Any, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """The image's latents: preprocessed by the pipeline's own video processor, encoded (the
        distribution's mode), normalised."""
        vae, device = pipeline.vae, pipeline._execution_device
        image = _preprocessed(pipeline, pixels, params).to(vae.device, torch.float32).unsqueeze(2).to(vae.dtype)
        return normalise(vae, vae.encode(image).latent_dist.mode().to(device, torch.float32))

    def timestep(self, rows: list[Row], timesteps: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """(rows, tokens): each row's timestep for each of its latent tokens (patches of 2 x 2), as the
        TI2V pipelines give it: 0 for a conditioning first frame's tokens, the row's step elsewhere."""
        per_frame = (shape[3] // 2) * (shape[4] // 2)
        timestep = timesteps.to(torch.float32).view(-1, 1).expand(len(rows), shape[2] * per_frame).clone()
        for i, row in enumerate(rows):
            if row.condition is not None:
                timestep[i, :per_frame] = 0.0
        return timestep

    def video_latents(self, row: Row, latents: torch.Tensor | None = None) -> torch.Tensor:
        """A conditioned row's first latent frame is its image's: the same floats as the pipelines'
        ``(1 - mask) * condition + mask * latents``."""
        latents = row.latents if latents is None else latents
        if row.condition is None:
            return latents
        return torch.cat([row.condition.to(latents.dtype), latents[:, :, 1:]], dim=2)


class ChannelConcat(TextOnly):
    """Wan2.2 I2V-A14B: mask and image latents concatenated to the noise on the channel axis."""

    name = "channel concat"

    def noise_channels(self, pipeline: Any) -> int:
        """The VAE's channels, not the transformer's (``WanImageToVideoPipeline.__call__``)."""
        return int(pipeline.vae.config.z_dim)

    def check(self, pipeline: Any, key: str, params: GenerationParams,
              condition: torch.Tensor | None) -> None:
        if condition is None:
            raise ValueError(f"row {key}: this model makes video from an image (Wan2.2 I2V); every row needs "
                             "its first frame (RowStart.condition from encode_first_frame)")
        expected = self.condition_shape(pipeline, params)
        if tuple(condition.shape) != expected:
            raise ValueError(f"row {key}: its condition has shape {tuple(condition.shape)}; this model and "
                             f"shape take {expected} (encode_first_frame at the row's shape)")

    @staticmethod
    def condition_shape(pipeline: Any, params: GenerationParams) -> tuple[int, ...]:
        temporal, spatial = pipeline.vae_scale_factor_temporal, pipeline.vae_scale_factor_spatial
        frames = (params.num_frames - 1) // temporal + 1
        channels = temporal + int(pipeline.vae.config.z_dim)  # mask, image latents
        return 1, channels, frames, params.height // spatial, params.width // spatial

    def encode(self, pipeline: Any, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """``cat([mask, latent_condition], dim=1)``: the image followed by ``num_frames - 1`` zero frames,
        encoded (the mode) and normalised, behind the mask of the frames given."""
        vae, device = pipeline.vae, pipeline._execution_device
        image = _preprocessed(pipeline, pixels, params).to(device, torch.float32).unsqueeze(2)  # (1, 3, 1, H, W)
        zeros = image.new_zeros(1, image.shape[1], params.num_frames - 1, params.height, params.width)
        video = torch.cat([image, zeros], dim=2).to(vae.device, vae.dtype)
        latents = normalise(vae, vae.encode(video).latent_dist.mode().to(device, torch.float32))
        # The pipeline's mask, (1, temporal, F, h, w): a video frame's 1 (given) or 0 per channel, the
        # first latent frame standing for the first frame repeated ``temporal`` times.
        mask = torch.zeros(1, pipeline.vae_scale_factor_temporal, *latents.shape[2:], device=latents.device)
        mask[:, :, 0] = 1.0
        return torch.cat([mask, latents], dim=1)

    def model_input(self, rows: list[Row]) -> torch.Tensor:
        """``cat([latents, condition], dim=1)`` for each row."""
        missing = [row.key for row in rows if row.condition is None]
        if missing:
            raise ValueError(f"rows {missing} have no first frame; this model makes video from an image only")
        inputs = [torch.cat([row.latents, row.condition.to(row.latents)], dim=1)  # type: ignore[union-attr]
                  for row in rows]
        return torch.cat(inputs)


def image_conditioning(pipeline: Any) -> TextOnly:
    """The kind of image conditioning ``pipeline``'s layout has."""
    if getattr(pipeline.config, "expand_timesteps", False):
        return FirstFrame()
    transformer = _transformer(pipeline)
    if transformer.config.in_channels <= pipeline.vae.config.z_dim:
        return TextOnly()
    if getattr(transformer.config, "image_dim", None) is not None:
        raise ValueError("a Wan2.1 I2V layout (an image encoder's embeddings as well) is not supported")
    return ChannelConcat()


def _transformer(pipeline: Any) -> Any:
    return pipeline.transformer if pipeline.transformer is not None else pipeline.transformer_2


def _preprocessed(pipeline: Any, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]: the pipeline's own video processor at the row's size."""
    return pipeline.video_processor.preprocess(Image.fromarray(pixels), height=params.height, width=params.width)
