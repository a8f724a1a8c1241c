"""What rank 0 sends its followers: the group's spec when it starts them, then one command per evaluation,
priming or decode (over each follower's pipe; the tensors they name follow by broadcast)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reelserve.parallel.layout import ParallelLayout

# A rank's model: (pipeline, adapter bank or None, ``Accelerated`` or None), built in the follower's own
# process. Picklable (a module-level function, or a ``functools.partial`` of one): it crosses to another process.
Build = Callable[[int], tuple[Any, Any, Any]]


@dataclass(frozen=True)
class GroupSpec:
    layout: ParallelLayout
    build: Build
    backend: str = "gloo"  # "nccl" on GPUs
    timeout_s: float = 300.0  # a collective (or the group's start) that takes longer fails the group
    threads: int | None = None  # torch's CPU threads in each follower
    start_method: str | None = None  # how followers start ("spawn", "forkserver"); None: ``ranks._process_context``


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class Forward:
    """One transformer evaluation: ``expert`` of the pipeline, the cond branch and with ``guided`` the
    uncond one, under the step caches' context and the rows' adapters."""

    expert: str
    guided: bool
    tensors: tuple[TensorSpec, ...]  # latents, timestep, prompts and (guided) negatives
    context: dict[str, Any]
    timestep: float  # the pipeline's ``_current_timestep`` (Pyramid Attention Broadcast reads it)
    adapters: tuple[tuple[tuple[str, float], ...], ...] = ()
    # Unguided under cfg=2: the two halves of the ranks each take half of the rows (not one branch each).
    split_rows: bool = False


@dataclass(frozen=True)
class Prime:
    """The accelerations' per-batch state (step caches): ``Accelerated.before_call(steps)``, or with
    None ``rows_dropped``, on every rank as on rank 0."""

    steps: int | None
    tensors: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class Decode:
    """Finished rows' latents (normalised); each rank decodes its tiles or rows and sends them to 0."""

    tensors: tuple[TensorSpec, ...]


def specs_of(tensors: dict[str, torch.Tensor]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, tuple(t.shape), t.dtype) for name, t in tensors.items())


def forward_call(expert: str, tensors: dict[str, torch.Tensor], context: dict[str, Any], timestep: float,
                 adapters: tuple[tuple[tuple[str, float], ...], ...]) -> Forward:
    return Forward(expert, "negatives" in tensors, specs_of(tensors), context, timestep, adapters)
