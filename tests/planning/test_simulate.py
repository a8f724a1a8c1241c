"""The simulation: deterministic, agrees with queueing theory, and follows the scheduler's rules."""

from __future__ import annotations

import pytest

from reelserve.engine.cost_model import CostModel
from reelserve.planning.simulate import Arrival, generate_arrivals, simulate
from reelserve.planning.workload import RequestShape, ServerConfig, Workload
from reelserve.schemas.slo import DEFAULT_TIERS

COSTS = CostModel()  # the prior: 64x64x17x25 with CFG is about 1.2 s alone
SMALL = RequestShape(width=64, height=64, frames=17, steps=25)


def service_s(batch: int = 1, shape: RequestShape = SMALL) -> float:
    return COSTS.predict(Workload(mix=[shape]).params(shape), batch)


def workload(**overrides: object) -> Workload:
    server = overrides.pop("server", {})
    return Workload.model_validate(
        {"mix": [SMALL.model_dump()], "requests": 400, "seed": 3, "server": server, **overrides}
    )


def test_same_seed_same_report() -> None:
    w = workload(
        rate_per_min=80,
        repeat_rate=0.2,
        tier_mix={"realtime": 1, "standard": 2, "batch": 1},
        server={"workers": 2, "max_wait_s": 0.5},
    )
    assert simulate(w, COSTS) == simulate(w, COSTS)
    assert simulate(w, COSTS) != simulate(w.model_copy(update={"seed": 4}), COSTS)


def test_single_worker_wait_matches_m_d_1() -> None:
    s = service_s()
    rho = 0.5
    w = workload(rate_per_min=rho / s * 60, requests=20_000, server={"max_batch_size": 1})
    report = simulate(w, COSTS)
    expected_wait = rho * s / (2 * (1 - rho))  # Pollaczek-Khinchine with deterministic service
    assert report.overall.queue_wait_s.mean == pytest.approx(expected_wait, rel=0.10)
    assert report.utilisation == pytest.approx(rho, rel=0.03)
    assert report.mean_batch_size == 1.0
    assert report.overall.latency_s.mean == pytest.approx(expected_wait + s, rel=0.05)


def test_more_workers_lower_p95() -> None:
    w = workload(rate_per_min=150, requests=600)
    p95 = [simulate(w, COSTS, workers=n).overall.latency_s.p95 for n in (1, 2, 4)]
    assert p95[0] > p95[1] > p95[2]
    assert p95[2] < 2 * service_s(4)


def test_realtime_waits_less_than_standard_under_saturation() -> None:
    w = workload(rate_per_min=200, requests=800, tier_mix={"realtime": 0.3, "standard": 0.7})
    report = simulate(w, COSTS)
    assert report.utilisation > 0.95
    realtime, standard = report.tier("realtime"), report.tier("standard")
    assert realtime.queue_wait_s.p95 < standard.queue_wait_s.p95 / 5
    assert realtime.completed + standard.completed == 800


def test_reserved_share_keeps_a_low_tier_moving() -> None:
    def batch_tier_median_wait(share: float) -> float:
        tiers = [
            t.model_copy(update={"reserved_share": share if t.name == "batch" else 0.0, "max_queue": 10_000})
            for t in DEFAULT_TIERS
        ]
        w = workload(
            rate_per_min=90,
            requests=800,
            tier_mix={"realtime": 0.75, "batch": 0.25},
            server={"tiers": [t.model_dump() for t in tiers]},
        )
        report = simulate(w, COSTS)
        assert report.utilisation > 0.95
        return report.tier("batch").queue_wait_s.p50

    assert batch_tier_median_wait(0.3) < batch_tier_median_wait(0.0) / 2


def test_repeats_become_cache_hits_once_their_source_finished() -> None:
    none = simulate(workload(rate_per_min=20), COSTS)
    assert none.overall.cache_hits == 0
    half = simulate(workload(rate_per_min=20, repeat_rate=0.5), COSTS)
    assert 0.35 * 400 < half.overall.cache_hits <= 0.5 * 400 + 30
    assert half.gpu_seconds < 0.7 * none.gpu_seconds
    assert half.overall.latency_s.p50 < none.overall.latency_s.p50


def test_batches_fill_while_waiting_for_joiners() -> None:
    alone = simulate(workload(rate_per_min=120, server={"max_batch_size": 1}), COSTS)
    batched = simulate(workload(rate_per_min=120, server={"max_batch_size": 4, "max_wait_s": 2.0}), COSTS)
    assert alone.mean_batch_size == 1.0
    assert batched.mean_batch_size > 2.0
    assert batched.gpu_seconds < alone.gpu_seconds


def test_full_tier_queue_rejects() -> None:
    tiers = [t.model_copy(update={"max_queue": 5}) for t in DEFAULT_TIERS]
    w = workload(rate_per_min=600, server={"tiers": [t.model_dump() for t in tiers]})
    report = simulate(w, COSTS)
    assert report.overall.rejected > 100
    assert report.overall.completed + report.overall.rejected == 400


def test_urgent_job_preempts_a_waiting_batch() -> None:
    big = RequestShape(width=128, height=128, frames=17, steps=25)
    w = workload(mix=[SMALL.model_dump(), big.model_dump()], server={"max_wait_s": 10.0})
    arrivals = [Arrival(0.0, 0, "standard", 0), Arrival(1.0, 1, "realtime", 1)]
    report = simulate(w, COSTS, arrivals=arrivals)
    # The standard batch, waiting for joiners, goes back to the queue; the realtime one opens at 1 s,
    # waits its own 10 s and runs; then the standard batch opens again and waits 10 s.
    assert report.tier("realtime").queue_wait_s.max == pytest.approx(10.0)
    assert report.tier("standard").queue_wait_s.max == pytest.approx(1.0 + 10.0 + service_s(1, big) + 10.0)
    assert report.batches == 2


def test_late_requests_count_as_deadline_misses() -> None:
    w = workload(rate_per_min=300, requests=200, tier_mix={"realtime": 1}, deadlines={"realtime": 20.0})
    report = simulate(w, COSTS)
    late = report.tier("realtime")
    assert 0 < late.deadline_misses < late.completed
    assert report.overall.deadline_misses == late.deadline_misses


def test_step_profile_raises_the_rate() -> None:
    w = workload(
        rate_per_min=60,
        requests=5000,
        max_duration_s=400,
        profile="step",
        step_rate_per_min=240,
        step_at_s=200,
    )
    times = [a.time_s for a in generate_arrivals(w)]
    before = sum(t < 200 for t in times)
    after = sum(200 <= t < 400 for t in times)
    assert before == pytest.approx(200, rel=0.2)
    assert after == pytest.approx(800, rel=0.1)
    spike = workload(
        rate_per_min=60,
        requests=5000,
        max_duration_s=300,
        profile="spike",
        spike_rate_per_min=600,
        spike_at_s=100,
        spike_length_s=50,
    )
    during = sum(100 <= a.time_s < 150 for a in generate_arrivals(spike))
    assert during == pytest.approx(500, rel=0.15)


def test_repeats_copy_shape_and_tier_of_their_source() -> None:
    w = workload(
        mix=[SMALL.model_dump(), RequestShape(width=128).model_dump()],
        repeat_rate=0.5,
        tier_mix={"realtime": 1, "batch": 1},
    )
    arrivals = generate_arrivals(w)
    originals = {a.content: a for a in arrivals if a.content == arrivals.index(a)}
    repeats = [a for a in arrivals if originals[a.content] is not a]
    assert len(repeats) > 100
    assert all((a.shape, a.tier) == (originals[a.content].shape, originals[a.content].tier) for a in repeats)


def test_server_defaults_mirror_the_server_settings() -> None:
    server = ServerConfig()
    assert (server.workers, server.max_batch_size, server.max_wait_s) == (1, 4, 0.05)
    assert [t.name for t in server.tiers] == ["realtime", "standard", "batch"]


def test_replayed_arrivals_must_fit_the_workload() -> None:
    with pytest.raises(ValueError, match="tier or shape"):
        simulate(workload(), COSTS, arrivals=[Arrival(0.0, 1, "standard", 0)])
    with pytest.raises(ValueError, match="tier or shape"):
        simulate(workload(), COSTS, arrivals=[Arrival(0.0, 0, "gold", 0)])


def test_a_batch_s_outputs_are_written_one_after_another_beside_the_next_batch() -> None:
    costs = CostModel()
    w = workload(server={"max_batch_size": 4, "max_wait_s": 0.01})  # all 8 arrive at once: two full batches
    costs.finish.observe(w.params(SMALL), 0.2)
    burst = [Arrival(time_s=0.0, shape=0, tier="standard", content=i) for i in range(8)]
    report = simulate(w, costs, arrivals=burst)
    call = costs.predict(w.params(SMALL), 4)
    # First batch: rows end at call + 0.2, 0.4, 0.6, 0.8; the second batch's call runs meanwhile
    assert report.overall.latency_s.mean == pytest.approx(((call + 0.5) + (2 * call + 0.5)) / 2)
    assert report.gpu_seconds == pytest.approx(2 * call)  # writing outputs is not pipeline time
