"""The simulation step by step (continuous batching, preemption), on a cost model whose every step
costs 1 s and every call 0.5 s more, whatever its rows: the outcomes can be worked out by hand."""

from __future__ import annotations

import pytest

from reelserve.engine.cost_model import CostModel, CostPrior
from reelserve.planning.simulate import Arrival, simulate
from reelserve.planning.workload import RequestShape, Workload
from reelserve.schemas.slo import DEFAULT_TIERS

CONSTANT = CostModel(
    CostPrior(step_fixed_s=1.0, step_per_unit_s=0.0, step_per_unit2_s=0.0,
              overhead_fixed_s=0.5, overhead_per_row_s=0.0, overhead_per_unit_s=0.0)
)
STEP_S, OVERHEAD_S = 1.0, 0.5
LONG = RequestShape(steps=100)  # 64x64x17
SHORT = RequestShape(steps=10)  # the same shape: it may join a batch of LONG
WIDE = RequestShape(width=128, steps=20)  # another shape


def workload(mix: list[RequestShape], *, joining: bool, preemption: bool, max_wait_s: float = 0.0,
             max_batch_size: int = 4, **fields: object) -> Workload:
    # No reserved shares: the most urgent waiting tier opens each batch.
    tiers = [tier.model_copy(update={"reserved_share": 0.0}) for tier in DEFAULT_TIERS]
    server = {"workers": 1, "max_batch_size": max_batch_size, "max_wait_s": max_wait_s,
              "continuous_batching": joining, "preemption": preemption, "tiers": [t.model_dump() for t in tiers]}
    return Workload.model_validate({"mix": [shape.model_dump() for shape in mix], "server": server, **fields})


def write_s(shape: RequestShape) -> float:
    """Seconds to write one job's outputs (the encode thread's, after the job's last step)."""
    return CONSTANT.finish.predict(Workload().params(shape))


def test_a_job_arriving_a_step_after_a_long_batch_started_joins_it_and_finishes_first() -> None:
    # The long job (batch tier) starts at 0; the short one (standard) arrives at 1.0, a step in.
    arrivals = [Arrival(0.0, 0, "batch", 0), Arrival(1.0, 1, "standard", 1)]
    joined = simulate(workload([LONG, SHORT], joining=True, preemption=True), CONSTANT, arrivals=arrivals)
    whole = simulate(workload([LONG, SHORT], joining=False, preemption=False), CONSTANT, arrivals=arrivals)

    # Whole batches: it waits for the long call (0.5 + 100 steps) and then runs its own (0.5 + 10).
    assert whole.tier("standard").latency_s.max == pytest.approx(OVERHEAD_S + 100 + OVERHEAD_S + 10 - 1.0 + write_s(SHORT))
    # Joining: it joins at the first boundary (1.5 s), leaves after its 10 steps, at 11.5 s.
    assert joined.tier("standard").latency_s.max == pytest.approx(OVERHEAD_S + 1 + 10 - 1.0 + write_s(SHORT))
    assert joined.tier("standard").queue_wait_s.max == pytest.approx(0.5)
    # The long job loses nothing: steps cost the same with two rows, and joining adds no overhead here.
    assert joined.tier("batch").latency_s.max == whole.tier("batch").latency_s.max == pytest.approx(
        OVERHEAD_S + 100 * STEP_S + write_s(LONG)
    )
    assert joined.batches == 1 and whole.batches == 2
    assert joined.gpu_seconds == pytest.approx(OVERHEAD_S + 100 * STEP_S)


def test_a_realtime_job_waits_about_a_step_with_preemption_and_the_batch_tier_loses_nothing() -> None:
    # Four batch-tier jobs fill a batch at 0 (100 steps each); a realtime job of another shape
    # arrives at 10.2 s, during the batch's 11th step.
    arrivals = [*(Arrival(0.0, 0, "batch", content) for content in range(4)), Arrival(10.2, 1, "realtime", 4)]
    preempting = simulate(workload([LONG, WIDE], joining=True, preemption=True, max_wait_s=0.1), CONSTANT,
                          arrivals=arrivals)
    whole = simulate(workload([LONG, WIDE], joining=False, preemption=False, max_wait_s=0.1), CONSTANT,
                     arrivals=arrivals)

    # Preemption: at the boundary after 10 steps (10.5 s) the batch is parked; the realtime batch
    # opens, waits its max_wait (0.1 s) and runs 0.5 + 20 s. Without: it waits for all 100 steps.
    assert preempting.tier("realtime").queue_wait_s.max == pytest.approx(10.5 + 0.1 - 10.2)
    assert whole.tier("realtime").queue_wait_s.max == pytest.approx(100.5 + 0.1 - 10.2)
    realtime_call = OVERHEAD_S + 20 * STEP_S
    assert preempting.tier("realtime").latency_s.max == pytest.approx(10.6 + realtime_call - 10.2 + write_s(WIDE))

    # The parked rows resume at 31.1 s from their 10th step: the 90 steps left, after the call's overhead.
    batch_tier = preempting.tier("batch")
    assert batch_tier.completed == 4 and batch_tier.rejected == 0
    assert batch_tier.queue_wait_s.max == pytest.approx(0.0)  # they first ran at once
    assert batch_tier.latency_s.max == pytest.approx(10.6 + realtime_call + OVERHEAD_S + 90 * STEP_S + 4 * write_s(LONG))
    # No step ran twice: 100 + 20 steps and three calls' overhead (the resumed batch is a new call).
    assert preempting.gpu_seconds == pytest.approx(3 * OVERHEAD_S + 120 * STEP_S)
    assert whole.gpu_seconds == pytest.approx(2 * OVERHEAD_S + 120 * STEP_S)
    assert (preempting.batches, whole.batches) == (3, 2)


def test_without_preemption_the_realtime_job_waits_for_the_whole_batch_even_when_joining() -> None:
    arrivals = [*(Arrival(0.0, 0, "batch", content) for content in range(4)), Arrival(10.2, 1, "realtime", 4)]
    joining_only = simulate(workload([LONG, WIDE], joining=True, preemption=False, max_wait_s=0.1), CONSTANT,
                            arrivals=arrivals)
    assert joining_only.tier("realtime").queue_wait_s.max == pytest.approx(100.5 + 0.1 - 10.2)


def test_preemption_alone_makes_way_for_a_more_urgent_job_of_the_same_shape() -> None:
    # Not joining, the batch cannot take the standard job: it parks after its first step (1.5 s), the
    # short job runs (0.5 + 10 s), and the long one resumes from step 1 (0.5 + 99 s).
    arrivals = [Arrival(0.0, 0, "batch", 0), Arrival(1.0, 1, "standard", 1)]
    report = simulate(workload([LONG, SHORT], joining=False, preemption=True), CONSTANT, arrivals=arrivals)
    assert report.tier("standard").queue_wait_s.max == pytest.approx(0.5)
    assert report.tier("batch").latency_s.max == pytest.approx(1.5 + 10.5 + 0.5 + 99 + write_s(LONG))
    assert report.gpu_seconds == pytest.approx(3 * OVERHEAD_S + 110 * STEP_S)


def test_step_by_step_with_nothing_to_join_or_preempt_matches_whole_batches() -> None:
    # One tier, one row per batch: nothing may join or preempt, so stepping must not change a thing.
    fields = {"rate_per_min": 50, "requests": 300, "seed": 5, "tier_mix": {"standard": 1.0}}
    stepped = simulate(workload([RequestShape()], joining=True, preemption=True, max_batch_size=1, **fields),
                       CostModel())
    whole = simulate(workload([RequestShape()], joining=False, preemption=False, max_batch_size=1, **fields),
                     CostModel())
    for name in ("p50", "p95", "max", "mean"):
        assert getattr(stepped.overall.latency_s, name) == pytest.approx(getattr(whole.overall.latency_s, name))
    assert stepped.gpu_seconds == pytest.approx(whole.gpu_seconds)
    assert (stepped.batches, stepped.mean_batch_size) == (whole.batches, 1.0)


def test_a_workload_simulates_step_scheduling_by_default_as_the_server_runs_it() -> None:
    fields = {"rate_per_min": 120, "requests": 300, "seed": 2, "tier_mix": {"realtime": 1, "standard": 2, "batch": 1}}
    mix = [LONG.model_dump(), SHORT.model_dump(), WIDE.model_dump()]
    default = Workload.model_validate({"mix": mix, **fields})
    on = Workload.model_validate({"mix": mix, "server": {"continuous_batching": True, "preemption": True}, **fields})
    off = Workload.model_validate({"mix": mix, "server": {"continuous_batching": False, "preemption": False}, **fields})
    assert simulate(default, CostModel()) == simulate(on, CostModel()) != simulate(off, CostModel())


@pytest.mark.parametrize(("joining", "preemption"), [(True, True), (True, False), (False, True)])
def test_every_request_ends_once_under_load(joining: bool, preemption: bool) -> None:
    fields = {"rate_per_min": 30, "requests": 400, "seed": 9, "repeat_rate": 0.1,
              "tier_mix": {"realtime": 1, "standard": 2, "batch": 2}}
    w = workload([LONG, SHORT, WIDE], joining=joining, preemption=preemption, max_wait_s=0.2, **fields)
    w = w.model_copy(update={"server": w.server.model_copy(update={"workers": 2})})
    report = simulate(w, CONSTANT)
    assert report == simulate(w, CONSTANT)  # deterministic
    overall = report.overall
    assert overall.arrived == 400 and overall.rejected == 0
    assert overall.completed == 400  # cache hits included: nothing parked is left behind
    assert 1.0 <= report.mean_batch_size <= 4.0
