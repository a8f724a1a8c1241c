"""A training run's resumable state: which stage, which step, every weight, optimiser and random
generator, so that a run stopped at any checkpoint and resumed ends with the very weights an
uninterrupted run makes.

One file, ``checkpoint.pt`` in the run's directory, replaced atomically (written beside, then
renamed), so a run killed while saving still has the previous checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = run_dir / (CHECKPOINT + ".partial")
    torch.save(state, partial)
    os.replace(partial, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    # weights_only=False: the state holds numpy generator states (plain dicts of ints) and the
    # config; the file is one this code wrote into the run directory.
    return torch.load(path, weights_only=False, map_location="cpu")  # a GPU run resumes anywhere


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


class CheckpointClock:
    """Says when a checkpoint is due: every ``every_s`` seconds of wall-clock time. When checkpoints
    happen never changes the result, only how much work a stop loses."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def reset(self) -> None:
        self._last = time.monotonic()
