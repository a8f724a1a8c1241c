"""Admission decisions against a known cost function: a call costs steps/10 s plus 0.5 s per row."""

import pytest
from support import SCHEDULING_LIMITS as LIMITS
from support import FakeClock, scheduling_params

from reelserve.engine.admission import Admission
from reelserve.engine.queue_ledger import QueueLedger
from reelserve.engine.tiers import TierTable
from reelserve.schemas import GenerationParams, ReelserveError, VideoCreateRequest
from reelserve.schemas.slo import DEFAULT_TIERS, DegradeLevel, Tier

PARAMS = scheduling_params(steps=20)
LEVELS = [
    DegradeLevel(name="high", min_queue_delay_s=10, max_steps=10),
    DegradeLevel(name="overload", min_queue_delay_s=40, max_steps=5, cache_only_tiers=["batch"]),
]


def cost(params: GenerationParams, rows: int) -> float:
    return params.num_inference_steps / 10 + 0.5 * rows


def admission(tiers: list[Tier] | None = None) -> tuple[Admission, QueueLedger]:
    clock = FakeClock()
    ledger = QueueLedger(cost, batch_limit=lambda key: 4, clock=clock)
    table = TierTable(tiers or DEFAULT_TIERS, "standard")
    return Admission(table, ledger, LIMITS, LEVELS, clock=clock), ledger


def fill(ledger: QueueLedger, level: int, tier: str, n: int, params: GenerationParams = PARAMS) -> None:
    for i in range(n):
        ledger.add(f"{tier}-{i}", level, tier, params.model_copy(update={"seed": i}))


def test_the_estimate_counts_the_queue_ahead_batched_and_the_running_batch() -> None:
    adm, ledger = admission()
    placement = adm.tiers.place(VideoCreateRequest(prompt="x"), None)
    assert adm.plan(PARAMS, placement).estimated_completion_at == pytest.approx(1000 + 2.0 + 0.5)
    fill(ledger, 1, "standard", 5)  # with the new job: 6 rows = a batch of 4 (4 s) and one of 2 (3 s)
    fill(ledger, 2, "batch", 8)  # less urgent: not ahead
    ledger.start_batch(PARAMS, 1)  # 2.5 s, just started
    plan = adm.plan(PARAMS, placement)
    assert plan.estimated_completion_at == pytest.approx(1000 + 2.5 + 4.0 + 3.0)
    assert plan.deadline_at == 1000 + 900 and plan.degraded == {}


def test_past_the_deadline_is_refused_with_when_to_come_back() -> None:
    adm, ledger = admission()
    fill(ledger, 1, "standard", 7)  # 8 rows: two full batches, 8 s
    placement = adm.tiers.place(VideoCreateRequest(prompt="x", deadline_seconds=5), None)
    with pytest.raises(ReelserveError) as refused:
        adm.plan(PARAMS, placement)
    assert refused.value.code == "deadline_unmeetable" and refused.value.http_status == 429
    assert refused.value.retry_after == pytest.approx(3.0)
    assert "8.0s" in refused.value.message and "allow_degrade" in refused.value.message


def test_realtime_late_work_degrades_only_when_allowed() -> None:
    adm, ledger = admission()
    ledger.start_batch(PARAMS, 1)  # 2.5 s; then the job alone: 2.5 s at 20 steps, 1.5 s at 10, 1.0 s at 5
    tight = VideoCreateRequest(prompt="x", priority="realtime", deadline_seconds=3.7)
    with pytest.raises(ReelserveError):
        adm.plan(PARAMS, adm.tiers.place(tight, None))
    allowed = tight.model_copy(update={"allow_degrade": True})
    plan = adm.plan(PARAMS, adm.tiers.place(allowed, None))
    assert plan.params.num_inference_steps == 5 and plan.degraded_reason == "deadline: overload"
    assert plan.degraded["num_inference_steps"].requested == 20


def test_load_levels_degrade_allowed_requests_and_make_the_batch_tier_cache_only() -> None:
    adm, ledger = admission()
    fill(ledger, 1, "standard", 40)  # 10 batches of 4 at 4 s: 40 s of queue delay -> overload
    assert adm.load().name == "overload"  # type: ignore[union-attr]
    plain = adm.plan(PARAMS, adm.tiers.place(VideoCreateRequest(prompt="x", priority="realtime"), None))
    assert plain.params == PARAMS and plain.degraded == {}
    allowed = VideoCreateRequest(prompt="x", priority="realtime", allow_degrade=True)
    lowered = adm.plan(PARAMS, adm.tiers.place(allowed, None))
    assert lowered.params.num_inference_steps == 5 and lowered.degraded_reason == "load: overload"
    with pytest.raises(ReelserveError) as refused:
        adm.plan(PARAMS, adm.tiers.place(VideoCreateRequest(prompt="x", priority="batch"), None))
    assert refused.value.code == "cache_only" and refused.value.retry_after >= 1


def test_a_full_tier_queue_is_refused_at_once() -> None:
    small = [Tier(name="standard", level=0, default_deadline_s=60, max_deadline_s=60, max_queue=2)]
    adm, ledger = admission(small)
    placement = adm.tiers.place(VideoCreateRequest(prompt="x"), None)
    fill(ledger, 0, "standard", 2)
    with pytest.raises(ReelserveError) as refused:
        adm.plan(PARAMS, placement)
    assert refused.value.code == "queue_full" and "2 jobs" in refused.value.message
    ledger.remove("standard-0")
    assert adm.plan(PARAMS, placement).params == PARAMS


def test_estimates_follow_how_long_jobs_really_take() -> None:
    adm, _ = admission()
    placement = adm.tiers.place(VideoCreateRequest(prompt="x"), None)
    base = adm.plan(PARAMS, placement).estimated_completion_at - 1000
    for _ in range(30):  # every job takes twice its estimate (the machine is busier than the model knows)
        adm.calibrate(1, actual_s=2 * base, estimated_s=adm.slowdown(1) * base)
    assert adm.slowdown(1) == pytest.approx(2.0, rel=0.05)
    assert adm.slowdown(0) == 1.0  # another level's jobs are estimated as before
    assert adm.plan(PARAMS, placement).estimated_completion_at - 1000 == pytest.approx(2 * base, rel=0.05)
    for _ in range(60):  # and back down when jobs take what the cost model says
        adm.calibrate(1, actual_s=base, estimated_s=adm.slowdown(1) * base)
    assert adm.slowdown(1) == pytest.approx(1.0, rel=0.05)


def test_a_reserved_share_bounds_the_estimate_under_a_more_urgent_flood() -> None:
    clock = FakeClock()
    ledger = QueueLedger(cost, batch_limit=lambda key: 4, clock=clock)
    adm = Admission(
        TierTable(DEFAULT_TIERS, "standard"), ledger, LIMITS, LEVELS, reserved_shares={1: 0.1}, clock=clock,
        served_above=lambda level: 1.0 if level > 0 else 0.0,  # realtime took all recent pipeline time
    )
    fill(ledger, 0, "realtime", 40)  # 10 full batches, 40 s: by priority alone, never
    fill(ledger, 1, "standard", 3)  # with the new job, one full standard batch: 4 s
    placement = adm.tiers.place(VideoCreateRequest(prompt="x"), None)
    assert adm.plan(PARAMS, placement).estimated_completion_at == pytest.approx(1000 + 4.0 / 0.1)
    without_share = Admission(
        TierTable(DEFAULT_TIERS, "standard"), ledger, LIMITS, LEVELS, clock=clock, served_above=lambda level: 1.0
    )
    with pytest.raises(ReelserveError, match="deadline"):  # 44 s at the least share (2 %) is past 900 s
        without_share.plan(PARAMS, placement)


def test_refused_urgent_requests_still_count_as_demand_that_will_take_the_pipeline() -> None:
    tiers = [t.model_copy(update={"max_queue": 1}) if t.name == "realtime" else t for t in DEFAULT_TIERS]
    adm, ledger = admission(tiers)
    standard = adm.tiers.place(VideoCreateRequest(prompt="x"), None)
    fill(ledger, 0, "realtime", 1)  # the realtime queue is full: every realtime request is refused
    calm = adm.plan(PARAMS, standard).estimated_completion_at - 1000
    realtime = adm.tiers.place(VideoCreateRequest(prompt="x", priority="realtime"), None)
    for _ in range(20):
        with pytest.raises(ReelserveError, match="queue is full"):
            adm.plan(PARAMS, realtime)
    # 20 requests of 1 s of pipeline each in the last 2 s: realtime will take all the pipeline it can
    assert adm.plan(PARAMS, standard).estimated_completion_at - 1000 > 10 * calm


def test_deadline_pressure_is_the_share_a_level_needs_for_its_queued_deadlines() -> None:
    clock = FakeClock()
    ledger = QueueLedger(cost, batch_limit=lambda key: 4, clock=clock)
    assert ledger.deadline_pressure(1) == 0.0
    for i in range(8):  # two full batches of 4 s each; the last job is due in 80 s
        ledger.add(f"s{i}", 1, "standard", PARAMS, deadline_at=1000 + 10 * (i + 1))
    ledger.add("r", 0, "realtime", PARAMS, deadline_at=1001)  # another level: not counted
    # job 0: 4 s in 10 s; job 3: 4 s in 40 s; job 4: 8 s in 50 s; the first is the tightest
    assert ledger.deadline_pressure(1) == pytest.approx(0.4)
    clock.now = 1005
    assert ledger.deadline_pressure(1) == pytest.approx(4 / 5)


def test_a_model_off_the_device_counts_its_swap_and_the_swap_alone_can_refuse() -> None:
    adm, _ = admission()
    placement = adm.tiers.place(VideoCreateRequest(prompt="x", deadline_seconds=5), None)
    assert adm.plan(PARAMS, placement).estimated_completion_at == pytest.approx(1000 + 2.5)  # on the device
    adm.swap_cost = lambda: 4.0  # its weights must come in first
    with pytest.raises(ReelserveError) as refused:
        adm.plan(PARAMS, placement)
    assert refused.value.http_status == 429 and refused.value.retry_after == pytest.approx(1.5)
    assert "4.00s of it to bring the model onto the device" in refused.value.message
    adm.swap_cost = lambda: 2.0
    assert adm.plan(PARAMS, placement).estimated_completion_at == pytest.approx(1000 + 4.5)
