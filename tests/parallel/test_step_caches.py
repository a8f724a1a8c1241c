"""First-Block Cache on a sequence split: two ranks whose shares of the tokens changed by very different
amounts since the last step both decide as one process would on the whole sequence (the change summed
over the shares), where the second rank alone would have skipped while the first computed."""

from __future__ import annotations

import multiprocessing
from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks import FirstBlockCacheConfig
from support import free_port

from reelserve.models.tiny import build_tiny_pipeline
from reelserve.parallel.step_caches import agree_on_skips, head_block_hooks

THRESHOLD = 0.4
# The last step's first-block residual, and this step's: tokens 0-1 moved by 0.9, tokens 2-3 by 0.1, so
# the whole sequence moved by 0.5 (over the threshold: compute), rank 1's share by 0.1 (under it).
PREVIOUS = torch.ones(1, 4, 2)
CURRENT = PREVIOUS + torch.tensor([0.9, 0.9, 0.1, 0.1]).view(1, 4, 1)


def decide(rank: int, address: str, decisions: Any) -> None:
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    try:
        transformer = build_tiny_pipeline(0).transformer
        transformer.enable_cache(FirstBlockCacheConfig(threshold=THRESHOLD))
        (hook,) = head_block_hooks(transformer)
        share = slice(2 * rank, 2 * rank + 2)
        with transformer.cache_context("cond"):
            hook.state_manager.get_state().head_block_residual = PREVIOUS[:, share]
            alone = hook._should_compute_remaining_blocks(CURRENT[:, share])
            agree_on_skips(transformer, lambda: None)  # None: the default group, both ranks
            together = head_block_hooks(transformer)[0]._should_compute_remaining_blocks(CURRENT[:, share])
        decisions.put((rank, alone, together))
    finally:
        dist.destroy_process_group()


def test_both_ranks_decide_on_the_whole_sequence() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    context = multiprocessing.get_context("spawn")
    decisions = context.Queue()
    ranks = [context.Process(target=decide, args=(rank, address, decisions)) for rank in range(2)]
    for process in ranks:
        process.start()
    try:
        seen = sorted(decisions.get(timeout=120) for _ in ranks)
    finally:
        for process in ranks:
            process.join(30)
    assert seen == [(0, True, True), (1, False, True)]  # rank 1 alone would have skipped; together, both compute
    assert all(process.exitcode == 0 for process in ranks)
