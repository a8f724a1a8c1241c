"""Toy Wan pipelines shared by the model tests; saved copies stand in for real checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reelserve.models.tiny import (
    TINY_MAX_SEQUENCE_LENGTH,
    build_a14b_layout,
    build_ti2v_5b_layout,
    build_tiny_pipeline,
)

Generate = Callable[..., np.ndarray]


@pytest.fixture(scope="session")
def tiny_pipe() -> Any:
    """Shared, so tests must not reconfigure it; build your own to change options."""
    pipe = build_tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def generate() -> Generate:
    """Run a pipeline at toy cost (2 steps, 5 frames) and return frames as float numpy.

    Keyword arguments override the defaults; pass ``seed`` for a fresh CPU generator.
    """

    def run(pipe: Any, seed: int = 0, **overrides: Any) -> np.ndarray:
        kwargs: dict[str, Any] = {
            "prompt": "a red fox in the snow",
            "negative_prompt": "",
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "num_inference_steps": 2,
            "guidance_scale": 5.0,
            "generator": torch.Generator().manual_seed(seed),
            "output_type": "np",
            "max_sequence_length": TINY_MAX_SEQUENCE_LENGTH,
        }
        kwargs.update(overrides)
        return pipe(**kwargs).frames

    return run


def _saved(tmp_path_factory: pytest.TempPathFactory, name: str, pipe: Any) -> Path:
    path = tmp_path_factory.mktemp(name)
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory, "tiny", build_tiny_pipeline(seed=0))


@pytest.fixture(scope="session")
def ti2v_5b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory, "ti2v-5b", build_ti2v_5b_layout(seed=0))


@pytest.fixture(scope="session")
def a14b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory, "a14b", build_a14b_layout(seed=0))
