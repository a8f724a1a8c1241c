"""Image rows through the owned loop, for the image-to-video parity tests of every layout."""

from __future__ import annotations

import numpy as np
import torch

from reelserve.engine.denoise_loop import denoise
from reelserve.models.family import RowStart
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams


def starts(family: WanFamily, rows: list[tuple[str, GenerationParams]], images: dict[str, np.ndarray]) -> dict:
    """Each image row's start: its first frame encoded as the runner's inputs encode it."""
    p = dict(rows)
    with torch.inference_mode():
        return {key: RowStart(condition=family.encode_first_frame(image, p[key])) for key, image in images.items()}


def owned(family: WanFamily, rows: list[tuple[str, GenerationParams]], images: dict[str, np.ndarray]) -> dict:
    """The rows' videos through the owned loop, each image row from its first frame; none may stop."""
    with torch.inference_mode():
        frames, stopped = denoise(family, family.prepare_rows(rows, starts(family, rows, images)), mixed_steps=True)
    assert stopped == {}
    return frames
