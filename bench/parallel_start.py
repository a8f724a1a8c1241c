"""How long a parallel worker's group takes to start, and so to be built again after it lost a rank
(``ParallelRanks.start``: the followers started, each loading the served model through the server's own
``rank_model``, the rendezvous, every rank joined), with followers spawned against forked from a server
process that imported torch, diffusers and the builder once (``reelserve/parallel/ranks.py``). CPU
processes with gloo; side by side in one run.

The first forkserver start includes starting that server; each later one (a rebuild) forks from it.

    .venv/bin/python bench/parallel_start.py [--model micro --layout cfg=2 --starts 4]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from _harness import machine, median, print_table

from reelserve.accel.options import SERVING_DEFAULTS
from reelserve.model_host import rank_model
from reelserve.models import LoadOptions, load_model
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.ranks import ParallelRanks


def starts(model: str, layout: ParallelLayout, method: str, count: int) -> list[float]:
    options = LoadOptions(device="cpu", accelerations=SERVING_DEFAULTS, cpu_threads=1)
    seconds = []
    for _ in range(count):
        pipeline = load_model(model, options).pipeline
        spec = GroupSpec(layout, partial(rank_model, model, options, None), threads=1, start_method=method)
        ranks = ParallelRanks(spec, pipeline, None)
        started = time.perf_counter()
        ranks.start()
        seconds.append(time.perf_counter() - started)
        ranks.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="micro")
    parser.add_argument("--layout", default="cfg=2")
    parser.add_argument("--starts", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    layout = ParallelLayout.parse(args.layout)
    rows = []
    for method in ("spawn", "forkserver"):
        seconds = starts(args.model, layout, method, args.starts)
        rows.append([method, f"{seconds[0]:.2f}", f"{median(seconds[1:]):.2f}",
                     " / ".join(f"{s:.2f}" for s in seconds)])
    print_table(f"Group starts, {args.model} --parallel {args.layout} on CPU (gloo), {machine()}",
                ["followers", "first s", "later s (median)", "each start s"], rows)


if __name__ == "__main__":
    main()
