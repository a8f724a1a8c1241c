"""Worker search and batch pricing."""

from __future__ import annotations

import math

import pytest

from reelserve.engine.cost_model import CostModel
from reelserve.planning.capacity import _apportion, estimate_batch_cost, find_workers
from reelserve.planning.simulate import simulate
from reelserve.planning.workload import RequestShape, Workload

COSTS = CostModel()
SMALL = RequestShape(width=64, height=64, frames=17, steps=25, weight=0.7)
BIG = RequestShape(width=128, height=128, frames=17, steps=25, weight=0.3)


def test_fewest_workers_meeting_the_target() -> None:
    w = Workload(mix=[SMALL, BIG], rate_per_min=300, requests=500, seed=5)
    search = find_workers(w, COSTS, target_p95_s=15.0)
    n = search.workers
    assert n is not None and n > 1
    assert simulate(w, COSTS, workers=n).overall.latency_s.p95 <= 15.0
    assert simulate(w, COSTS, workers=n - 1).overall.latency_s.p95 > 15.0
    assert [p.workers for p in search.curve] == sorted({p.workers for p in search.curve})
    assert {p.workers for p in search.curve} >= {n - 1, n}
    assert all(p.meets_target == (p.p95_s <= 15.0) for p in search.curve)


def test_target_for_one_tier() -> None:
    w = Workload(mix=[SMALL], rate_per_min=200, requests=400, tier_mix={"realtime": 0.2, "standard": 0.8})
    realtime = find_workers(w, COSTS, target_p95_s=6.0, tier="realtime")
    overall = find_workers(w, COSTS, target_p95_s=6.0)
    assert realtime.workers is not None and overall.workers is not None
    assert realtime.workers <= overall.workers


def test_unreachable_target() -> None:
    w = Workload(mix=[SMALL], rate_per_min=60, requests=100)
    search = find_workers(w, COSTS, target_p95_s=0.01, max_workers=8)
    assert search.workers is None
    assert search.curve[-1].workers == 8 and not any(p.meets_target for p in search.curve)


def test_batch_cost_in_full_batches() -> None:
    w = Workload(mix=[SMALL], server={"max_batch_size": 4, "workers": 2})
    params = w.params(SMALL)
    cost = estimate_batch_cost(w, COSTS, videos=10, gpu_hour_price=3.0)
    expected_s = 2 * COSTS.predict(params, 4) + COSTS.predict(params, 2)
    assert cost.batches == 3 and cost.unique_videos == 10
    assert cost.gpu_seconds == pytest.approx(expected_s)
    assert cost.gpu_hours == pytest.approx(expected_s / 3600)
    assert cost.cost == pytest.approx(expected_s / 3600 * 3.0)
    assert cost.gpu_seconds_per_video == pytest.approx(expected_s / 10)
    assert cost.wall_clock_s == pytest.approx(expected_s / 2)
    assert estimate_batch_cost(w, COSTS, videos=10).cost is None


def test_repeats_and_mix_in_batch_cost() -> None:
    w = Workload(mix=[SMALL, BIG], repeat_rate=0.5, server={"max_batch_size": 8})
    cost = estimate_batch_cost(w, COSTS, videos=1000)
    assert cost.unique_videos == 500
    assert cost.batches == math.ceil(350 / 8) + math.ceil(150 / 8)
    no_repeats = estimate_batch_cost(w.model_copy(update={"repeat_rate": 0.0}), COSTS, videos=1000)
    assert cost.gpu_seconds == pytest.approx(no_repeats.gpu_seconds / 2, rel=0.02)


def test_apportion_is_whole_and_proportional() -> None:
    assert _apportion(10, [0.7, 0.3]) == [7, 3]
    assert sum(_apportion(7, [1, 1, 1])) == 7
    assert _apportion(1, [0.2, 0.8]) == [0, 1]
