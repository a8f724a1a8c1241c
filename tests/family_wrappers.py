"""The real model family behind a test's hand: a gate that holds every batch at its start, or a
recorder of each step that can hold the batch before a given step. Re-exported by ``support``."""

from __future__ import annotations

import threading
from typing import Any

import torch

from reelserve.schemas import GenerationParams


class GatedFamily:
    """The real model family, but each batch waits at its start until the test opens ``gate``.

    Lets a test hold the engine busy so later jobs are provably queued, without sleeping. A batch
    holding a prompt with "boom" in it fails, as a model that fell over would."""

    def __init__(self, real: Any, shares: GatedFamily | None = None) -> None:
        self.real = real
        if shares is not None:  # another lane's: one gate holds every lane
            self.gate, self.entered = shares.gate, shares.entered
            return
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:  # denoise_step, scheduler_step, decode, pipeline
        return getattr(self.real, name)

    def prepare_rows(self, rows: list[tuple[str, GenerationParams]], starts: Any = None) -> Any:
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        if any("boom" in params.prompt for _, params in rows):
            raise RuntimeError("boom: the pipeline fell over")
        return self.real.prepare_rows(rows, starts)

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()


class StepRecorder:
    """The real family, noting each step's thread and torch thread count; ``hold_at`` holds the
    batch before that step until the test opens ``gate``."""

    def __init__(self, real: Any, hold_at: int | None = None) -> None:
        self.real, self.hold_at = real, hold_at
        self.steps: list[tuple[str, int]] = []
        self.gate, self.held = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def denoise_step(self, rows: list[Any]) -> Any:
        if self.hold_at is not None and rows[0].step + 1 == self.hold_at:
            self.held.set()
            assert self.gate.wait(60), "the test never opened the gate"
        self.steps.append((threading.current_thread().name, torch.get_num_threads()))
        return self.real.denoise_step(rows)
