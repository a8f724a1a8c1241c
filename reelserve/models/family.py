"""The seam between the engine's denoising loop and a model: a ``ModelFamily`` turns requests into
rows, evaluates one denoising step for a set of rows, steps each row's scheduler and decodes
finished rows. The loop (``reelserve.engine.denoise_loop``) owns the iteration, so every row is
independent: it carries its own latents, scheduler state, step and guidance, and can leave the
batch at any step.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from reelserve.schemas import GenerationParams


@dataclass
class Row:
    """One video being denoised."""

    key: str  # the job id
    params: GenerationParams
    latents: torch.Tensor  # (1, C, F, H, W), float32
    scheduler: Any  # this row's own copy: multistep schedulers keep past outputs per sample
    timesteps: torch.Tensor
    prompt_embeds: torch.Tensor  # (1, L, D)
    negative_embeds: torch.Tensor | None  # None: guidance off (scale <= 1)
    step: int = 0
    # Image to video (``models/image_conditioning.py``), normalised: Wan2.2 TI2V's first frame's latents
    # (1, C, 1, H, W), which the model sees in place of the row's first latent frame at every step, at
    # timestep 0; or Wan2.2 I2V-A14B's mask and image latents (1, 4 + C, F, H, W), joined to the row's
    # latents on the channel axis at every step.
    condition: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.step >= len(self.timesteps)

    @property
    def timestep(self) -> torch.Tensor:
        return self.timesteps[self.step]


@dataclass(frozen=True)
class RowStart:
    """What a row starts from besides its seed's noise (``ModelFamily.prepare_rows``)."""

    # Image to video: ``ModelFamily.encode_first_frame``'s condition (``Row.condition``).
    condition: torch.Tensor | None = None
    # Remix and video to video: clean latents of a whole clip of the row's shape, normalised; the row
    # starts from them noised to its ``strength`` and runs that share of its steps (SDEdit).
    source: torch.Tensor | None = None


class ModelFamily(Protocol):
    def prepare_rows(self, rows: list[tuple[str, GenerationParams]],
                     starts: dict[str, RowStart] | None = None) -> list[Row]:
        """Initial latents from each row's own seed, its scheduler, and its text conditioning; a row
        with a ``RowStart`` (by row key) starts from it."""
        ...

    def group_key(self, row: Row) -> Hashable:
        """Rows with equal keys can be evaluated in one ``denoise_step``, whatever their steps."""
        ...

    def denoise_step(self, rows: list[Row]) -> torch.Tensor:
        """The guided noise prediction for ``rows`` (one transformer evaluation, or two with
        guidance), each at its own step; they share a ``group_key`` and a shape (the batch key)."""
        ...

    def scheduler_step(self, rows: list[Row], prediction: torch.Tensor) -> None:
        """Advance every row's latents and step by its own scheduler."""
        ...

    def decode(self, rows: list[Row]) -> list[np.ndarray]:
        """Finished rows to frames, float in [0, 1], (F, H, W, 3) each."""
        ...

    def final_latents(self, row: Row) -> torch.Tensor:
        """A finished row's clean latents as decoded, (1, C, F, H, W): what a remix of it starts from."""
        ...

    def encode_first_frame(self, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """A first frame, (H, W, 3) uint8 at the row's size, as ``RowStart.condition`` for the row's shape."""
        ...

    def encode_video(self, frames: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """A clip, (F, H, W, 3) uint8 at the row's shape, as ``RowStart.source``."""
        ...

    def x0_estimate(self, row: Row) -> torch.Tensor:
        """The row's current estimate of its clean latents, (1, C, F, H, W): what a live preview shows."""
        ...

    @property
    def frames_per_latent(self) -> int:
        """Video frames one latent frame stands for."""
        ...
