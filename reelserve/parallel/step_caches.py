"""Step caches on a sequence split: every rank of a split must skip the same blocks, or the ones that
run would wait in their all-to-all for ones that skipped.

TaylorSeer and Pyramid Attention Broadcast decide by step counts and timesteps, the same on every rank.
First-Block Cache decides from how much the first block's residual changed since the last step, a mean
over every token, of which each rank holds a share: here the ranks of a split sum their shares' two
terms (all-reduce) and each decides on the whole sequence's ratio, as one process does. MagCache stays
refused (each rank would calibrate its own ratios at load: equal on a CPU, not guaranteed on GPUs).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks.first_block_cache import FBCHeadBlockHook

AGREED_KINDS = ("fbcache", "taylorseer", "pab")


def agree_on_skips(transformer: torch.nn.Module, group: Callable[[], Any]) -> None:
    """Binds each First-Block Cache decision of ``transformer`` to the whole sequence. :param group: the
    rank's sequence group now (read at each decision: a rebuilt group is a new one)."""
    for hook in head_block_hooks(transformer):
        hook._should_compute_remaining_blocks = types.MethodType(_whole_sequence_decision(group), hook)


def head_block_hooks(transformer: torch.nn.Module) -> list[FBCHeadBlockHook]:
    """The First-Block Cache hooks that decide whether the other blocks run (one per transformer)."""
    registries = [r for m in transformer.modules() if (r := getattr(m, "_diffusers_hook", None)) is not None]
    return [hook for registry in registries for hook in registry.hooks.values() if isinstance(hook, FBCHeadBlockHook)]


def _whole_sequence_decision(group: Callable[[], Any]) -> Callable[[Any, torch.Tensor], bool]:
    def should_compute(hook: Any, residual: torch.Tensor) -> bool:
        previous = hook.state_manager.get_state().head_block_residual
        if previous is None:
            return True
        # mean|r - p| / mean|p| over all tokens: the counts cancel, so the sums of the shares make it.
        sums = torch.stack([(residual - previous).abs().sum(dtype=torch.float32),
                            previous.abs().sum(dtype=torch.float32)])
        dist.all_reduce(sums, group=group())
        return (sums[0] / sums[1]).item() > hook.threshold

    return should_compute
