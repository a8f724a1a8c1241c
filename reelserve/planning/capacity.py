"""Answers built on the simulation and the cost model: the fewest workers that hold a p95 target, and
what an offline batch of videos costs in GPU time and money."""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel

from reelserve.engine.cost_model import CostModel
from reelserve.planning.report import PlanReport
from reelserve.planning.simulate import generate_arrivals, simulate
from reelserve.planning.workload import Workload


class CurvePoint(BaseModel):
    workers: int
    p95_s: float
    throughput_per_s: float
    utilisation: float
    meets_target: bool


class WorkerSearch(BaseModel):
    """``workers`` is the fewest that meet the target (None: not even ``max_workers``); ``curve`` holds
    every worker count simulated on the way, in order."""

    target_p95_s: float
    tier: str | None  # None: over all requests
    workers: int | None
    max_workers: int
    curve: list[CurvePoint]


def find_workers(
    workload: Workload,
    cost_model: CostModel,
    target_p95_s: float,
    *,
    tier: str | None = None,
    max_workers: int = 256,
) -> WorkerSearch:
    """Smallest worker count whose simulated p95 latency (of ``tier``, or overall) is at most the target.

    Doubles from 1 until the target is met, then bisects; the answer N always meets the target and,
    when above 1, N-1 was simulated and does not. All runs replay the same arrivals."""
    arrivals = generate_arrivals(workload)
    results: dict[int, PlanReport] = {}

    def p95_of(workers: int) -> float:
        report = results.get(workers)
        if report is None:
            report = results[workers] = simulate(workload, cost_model, workers=workers, arrivals=arrivals)
        return (report.tier(tier) if tier else report.overall).latency_s.p95

    def meets(workers: int) -> bool:
        return p95_of(workers) <= target_p95_s

    found = _bisect(meets, max_workers)
    curve = [
        CurvePoint(
            workers=n,
            p95_s=p95_of(n),
            throughput_per_s=report.overall.throughput_per_s,
            utilisation=report.utilisation,
            meets_target=meets(n),
        )
        for n, report in sorted(results.items())
    ]
    return WorkerSearch(
        target_p95_s=target_p95_s, tier=tier, workers=found, max_workers=max_workers, curve=curve
    )


def _bisect(meets: Callable[[int], bool], max_workers: int) -> int | None:
    failing, candidate = 0, 1
    while not meets(candidate):
        if candidate >= max_workers:
            return None
        failing, candidate = candidate, min(candidate * 2, max_workers)
    while candidate - failing > 1:
        middle = (failing + candidate) // 2
        if meets(middle):
            candidate = middle
        else:
            failing = middle
    return candidate


class BatchCost(BaseModel):
    """An offline batch: every unique video runs in full batches of ``max_batch_size`` per shape;
    repeats are answered from the cache."""

    videos: int
    unique_videos: int
    batches: int
    gpu_seconds: float
    gpu_hours: float
    gpu_seconds_per_video: float
    gpu_hour_price: float | None
    cost: float | None
    cost_per_video: float | None
    wall_clock_s: float  # with the server's workers, if the batches spread evenly
    workers: int


def estimate_batch_cost(
    workload: Workload, cost_model: CostModel, videos: int, gpu_hour_price: float | None = None
) -> BatchCost:
    """GPU time of ``videos`` requests drawn from the workload's mix (in expectation, rounded to whole
    videos per batch key) and its price at ``gpu_hour_price`` per GPU-hour."""
    if videos < 1:
        raise ValueError("videos must be at least 1")
    unique = max(1, round(videos * (1.0 - workload.repeat_rate)))
    per_key: dict[str, tuple[int, int]] = {}  # batch key -> (mix index, videos)
    for index, count in enumerate(_apportion(unique, [shape.weight for shape in workload.mix])):
        key = workload.params(workload.mix[index]).batch_key()
        first, so_far = per_key.get(key, (index, 0))
        per_key[key] = (first, so_far + count)
    size = workload.server.max_batch_size
    batches, gpu_s = 0, 0.0
    for index, count in per_key.values():
        params = workload.params(workload.mix[index])
        full, rest = divmod(count, size)
        batches += full + (1 if rest else 0)
        gpu_s += full * cost_model.predict(params, size) + (cost_model.predict(params, rest) if rest else 0.0)
    cost = None if gpu_hour_price is None else gpu_s / 3600.0 * gpu_hour_price
    workers = workload.server.workers
    return BatchCost(
        videos=videos,
        unique_videos=unique,
        batches=batches,
        gpu_seconds=gpu_s,
        gpu_hours=gpu_s / 3600.0,
        gpu_seconds_per_video=gpu_s / videos,
        gpu_hour_price=gpu_hour_price,
        cost=cost,
        cost_per_video=None if cost is None else cost / videos,
        wall_clock_s=gpu_s / workers,
        workers=workers,
    )


def _apportion(total: int, weights: list[float]) -> list[int]:
    """Whole numbers summing to ``total`` in proportion to ``weights`` (largest remainders)."""
    shares = [total * w / sum(weights) for w in weights]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts
