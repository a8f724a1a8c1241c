"""How the pipeline uses the CPU, chosen by measuring the served model on this machine: how many
lanes (``engine.lanes``) and how many torch threads each.

Why measure: the best split depends on the model, the shape, the cores and what else runs there.
On the 2-core machine of docs/benchmarks.md, at the micro model's serving shape, one lane of two
threads makes 2.5 videos/s (a batch of four in 1.6 s, against 2.4 s on one thread), two lanes of
one thread 3.2 (bench/cpu_threads.py); with a core busy elsewhere two threads in one call took 2.5x
as long as one, since every op waits for a descheduled partner. A larger model keeps more threads
busy inside one call and may want one lane. So a server that leaves ``--pipeline-lanes`` and
``--cpu-threads`` unset times short calls of full batches at the serving shape for each plan at
warm-up and keeps the one with the most videos per second; explicit settings are never
second-guessed, and a GPU is never tuned here.

Torch keeps the thread count per OS thread, so the choice is applied by the lanes on their own
threads at every call, not by setting it once here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reelserve.schemas import GenerationParams

if TYPE_CHECKING:
    from reelserve.engine.cost_model import CallTiming
    from reelserve.engine.lanes import PipelineLanes
    from reelserve.models.registry import LoadedModel

TUNING_STEPS = 2  # per timed call: the steps' share of a call is what the split moves most
TUNING_REPEATS = 2  # interleaved rounds; the median of each plan's calls decides
# Within 10 % of the best, more lanes, then fewer threads win. While one lane waits between batches
# (its videos being written, its clients coming back with their next requests) the others work on,
# and a lane of one thread has no partner to wait for; short calls in a row show neither. Served to
# 8 closed-loop clients the micro model made 3.6-3.8 videos/s on 2 lanes x 1 thread and 3.3-3.5
# on 1 lane x 2 threads, which the short calls here had put within 3-6 % of it, either side
# (docs/benchmarks.md, "The hot path").
CLOSE = 1.10


@dataclass(frozen=True, order=True)
class LanePlan:
    lanes: int
    threads: int

    def __str__(self) -> str:
        return f"{self.lanes} lane{'s' if self.lanes > 1 else ''} x {self.threads} thread{'s' if self.threads > 1 else ''}"


@dataclass(frozen=True)
class PlanChoice:
    plan: LanePlan
    rates: dict[LanePlan, float]  # plan -> videos per second at the default steps (median)

    def describe(self) -> str:
        rates = ", ".join(f"{plan}: {rate:.2f}" for plan, rate in sorted(self.rates.items()))
        return f"{self.plan} (videos/s of full batches at the serving shape and default steps: {rates})"


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, and ``cores`` itself."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, max(cores, 1)]


def plans(cores: int, max_lanes: int) -> list[LanePlan]:
    """One lane with 1, 2, 4, ... threads (fewer than the cores can win on a busy machine), and
    every lane count up to ``max_lanes`` that shares the cores out evenly."""
    one_lane = [LanePlan(1, threads) for threads in candidates(cores)]
    laned = [LanePlan(lanes, cores // lanes) for lanes in candidates(cores)[1:] if lanes <= max_lanes]
    return one_lane + laned


def tune_lanes(model: LoadedModel, lanes: PipelineLanes, per_lane_batch: int, cores: int) -> PlanChoice:
    """Time full batches (``per_lane_batch`` rows per lane) of ``TUNING_STEPS`` steps at the model's
    default clip shape for each plan, interleaved; leave ``lanes`` using the choice."""

    def measure(plan: LanePlan) -> CallTiming:
        lanes.use(plan.lanes, plan.threads)
        return short_full_batch(model, lanes, per_lane_batch)

    choice = choose_plan(measure, plans(cores, len(lanes.runners)), model.limits.default_steps)
    lanes.use(choice.plan.lanes, choice.plan.threads)
    return choice


def short_full_batch(model: LoadedModel, lanes: PipelineLanes, per_lane_batch: int) -> CallTiming:
    """One batch of ``per_lane_batch`` rows for each lane in use, ``TUNING_STEPS`` steps at the
    model's default clip shape: a measurement, and the warm-up of every lane's first call."""
    limits = model.limits
    rows = [(f"tuning-{i}", GenerationParams(
        model=model.name, prompt="thread tuning", width=limits.default_width, height=limits.default_height,
        num_frames=limits.default_frames, fps=limits.default_fps, num_inference_steps=TUNING_STEPS,
        guidance_scale=limits.default_guidance,
        guidance_scale_2=limits.default_guidance if limits.two_experts else None, seed=i,
    )) for i in range(per_lane_batch * lanes.lanes)]
    return lanes.run(rows).calls[0]


def choose_plan(measure: Callable[[LanePlan], CallTiming], options: list[LanePlan], steps: int) -> PlanChoice:
    """Each plan's videos per second for calls of ``steps`` steps, from short calls' per-step and
    per-call parts (a short call alone would weigh the steps too little), medians of interleaved
    rounds; the most lanes, then the fewest threads, within ``CLOSE`` of the best win."""
    rates: dict[LanePlan, list[float]] = {plan: [] for plan in options}
    for repeat in range(TUNING_REPEATS):
        for plan in options if repeat % 2 == 0 else list(reversed(options)):
            timing = measure(plan)
            step_s = timing.step_s if timing.step_s is not None else timing.total_s / max(timing.steps, 1)
            rates[plan].append(timing.batch_size / (timing.overhead_s + steps * step_s))
    medians = {plan: statistics.median(values) for plan, values in rates.items()}
    best = max(medians.values())
    chosen = min((plan for plan, rate in medians.items() if rate * CLOSE >= best),
                 key=lambda plan: (-plan.lanes, plan.threads))
    return PlanChoice(chosen, medians)
