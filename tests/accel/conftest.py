"""Shared by the acceleration tests: the trained micro model, loaded once without accelerations, and
two micro requests to compare an acceleration's videos on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reelserve.models import LoadedModel, LoadOptions, load_model
from reelserve.schemas import GenerationParams


@pytest.fixture(scope="session")
def micro_model() -> LoadedModel:
    """Plain eager micro: the reference accelerated runs are compared with. Do not reconfigure it."""
    return load_model("micro", LoadOptions(device="cpu"))


@pytest.fixture
def micro_rows() -> Callable[[int], list[tuple[str, GenerationParams]]]:
    """``micro_rows(steps)``: two different micro requests at the default shape, guided, seeds 0 and 1."""

    def rows(steps: int) -> list[tuple[str, GenerationParams]]:
        return [(f"j{i}", GenerationParams(model="micro", prompt=prompt, width=64, height=64, num_frames=17, fps=8,
                                           num_inference_steps=steps, guidance_scale=5.0, seed=i))
                for i, prompt in enumerate(["a red circle moving right", "a blue square moving up"])]

    return rows
