"""How followers start: forked from a forkserver that imported the heavy modules once on the CPU, spawned on GPUs."""

from __future__ import annotations

from functools import partial

from parallel_builds import build
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.ranks import _process_context


def test_cpu_groups_fork_from_a_server_and_gpu_groups_spawn() -> None:
    layout = ParallelLayout.parse("cfg=2")
    cpu = _process_context(GroupSpec(layout, partial(build, "tiny")))
    assert cpu.get_start_method() == "forkserver"
    assert _process_context(GroupSpec(layout, build, backend="nccl")).get_start_method() == "spawn"
    assert _process_context(GroupSpec(layout, build, start_method="spawn")).get_start_method() == "spawn"
