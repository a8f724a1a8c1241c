"""Torch's CPU thread count for serving, chosen by measuring the served model on this machine.

Why measure: the best count depends on the model, the shape, the cores and what else runs there.
On the 2-core machine of docs/benchmarks.md a batch of four micro clips (64x64, 17 frames, 25 steps)
takes 1.60 s with two threads and 2.40 s with one when the machine is idle, but 3.74 s with two and
2.45 s with one while another process keeps a core busy (bench/cpu_threads.py): a thread that waits
for a descheduled partner at every parallel region loses more than a second core gives. A small
model on many cores can want fewer threads than cores too. So a server whose ``--cpu-threads`` is
unset times short calls at the serving shape for each candidate count at warm-up and keeps the
fastest; an explicit ``--cpu-threads`` is never second-guessed, and a GPU is never tuned here.

Torch keeps the thread count per OS thread (a thread started earlier keeps its own), so the choice
is applied by the runner on the pipeline thread at every call, not by setting it once here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from reelserve.engine.cost_model import CallTiming
    from reelserve.models.registry import LoadedModel

TUNING_STEPS = 2  # per timed call: the steps' share of a call is what the thread count moves most
TUNING_REPEATS = 2  # interleaved rounds; the median of each candidate's calls decides
CLOSE = 1.05  # within 5 % of the fastest, fewer threads win: they leave cores for everything else


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    seconds: dict[int, float]  # candidate -> median seconds of one call at the default steps

    def describe(self) -> str:
        timings = ", ".join(f"{n}: {s:.2f} s" for n, s in sorted(self.seconds.items()))
        return f"{self.threads} (a call at the serving shape and default steps, by thread count: {timings})"


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, and ``cores`` itself."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, max(cores, 1)]


def tune_cpu_threads(model: LoadedModel, batch_size: int, cores: int) -> ThreadChoice:
    """Time ``TUNING_REPEATS`` short calls of ``batch_size`` rows at the model's default clip shape per
    candidate thread count, interleaved, on the calling thread; leave that thread at the choice."""
    limits = model.limits

    def measure() -> CallTiming:
        model.generate(["thread tuning"] * batch_size, limits.default_width, limits.default_height,
                       limits.default_frames, TUNING_STEPS)
        return model.last_calls[0]

    return choose_threads(measure, candidates(cores), limits.default_steps)


def choose_threads(measure: Callable[[], CallTiming], options: list[int], steps: int) -> ThreadChoice:
    """Each candidate's seconds for a call of ``steps`` steps, from short calls' per-step and
    per-call parts (a short call alone would weigh the steps too little), medians of interleaved
    rounds; the fewest threads within ``CLOSE`` of the fastest win."""
    seconds: dict[int, list[float]] = {n: [] for n in options}
    for repeat in range(TUNING_REPEATS):
        for threads in options if repeat % 2 == 0 else list(reversed(options)):
            torch.set_num_threads(threads)
            timing = measure()
            step_s = timing.step_s if timing.step_s is not None else timing.total_s / max(timing.steps, 1)
            seconds[threads].append(timing.overhead_s + steps * step_s)
    medians = {n: statistics.median(times) for n, times in seconds.items()}
    fastest = min(medians.values())
    chosen = min(n for n, s in medians.items() if s <= fastest * CLOSE)
    torch.set_num_threads(chosen)
    return ThreadChoice(chosen, medians)
