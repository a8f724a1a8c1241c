"""A training stage: a fixed number of steps whose whole state can be saved and restored between
any two of them. ``reelserve.micro.train`` runs the stages in order and checkpoints them."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from reelserve.micro.checkpoint import restore_rng, rng_state


class Stage(Protocol):
    name: str
    total: int  # steps

    def step(self, index: int) -> float | None:
        """Run step ``index``; return its loss, if it has one."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the pipeline's weights that the next step depends on."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def finish(self) -> dict[str, Any]:
        """After the last step: put what ships into the pipeline; return entries for the summary."""
        ...


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to a tenth of the learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimiser_state(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    return {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}


def restore_optimiser(
    optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]
) -> None:
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])


def trainer_state(stage: Any) -> dict[str, Any]:
    """A training stage's state besides the weights: its optimiser and schedule, its weights' moving
    average, its random generators and its losses so far."""
    return {**optimiser_state(stage.optimizer, stage.schedule), "average": stage.average.state_dict(),
            "rng": rng_state(stage.rng), "generator": stage.generator.get_state(), "losses": stage.losses}


def restore_trainer(stage: Any, state: dict[str, Any]) -> None:
    restore_optimiser(stage.optimizer, stage.schedule, state)
    stage.average.load_state_dict(state["average"])
    restore_rng(stage.rng, state["rng"])
    stage.generator.set_state(state["generator"])
    stage.losses = list(state["losses"])
