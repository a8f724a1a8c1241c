"""Report aggregation from hand-made records: counts, percentiles, deadline misses, JSON and the plot."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reelserve.loadgen import LoadReport, Percentiles, QueueSample, RequestRecord, percentile
from reelserve.loadgen.runner import _queue_sample


def record(index: int, tier: str = "standard", **fields: Any) -> RequestRecord:
    return RequestRecord(index=index, tier=tier, scheduled_s=float(index), sent_s=float(index), **fields)


def completed(index: int, e2e: float, queue: float, tier: str = "standard", **fields: Any) -> RequestRecord:
    fields = {"total_s": e2e, **fields}
    return record(
        index,
        tier,
        http_status=200,
        job_id=f"video_{index}",
        final_status="completed",
        finished_s=index + e2e,
        queue_s=queue,
        **fields,
    )


def hand_made_records() -> list[RequestRecord]:
    return [
        completed(0, 2.0, 0.5, tier="realtime"),
        completed(
            1, 4.0, 1.5, tier="realtime", degraded={"num_inference_steps": {"requested": 25, "ran": 15}}
        ),
        completed(2, 0.1, 0.0, tier="realtime", cached=True, repeat_of=0),
        record(
            3,
            "realtime",
            http_status=429,
            error_code="deadline_unmeetable",
            has_retry_after=True,
            retry_after_s=3.0,
        ),
        record(4, "realtime", http_status=503, error_code="circuit_open"),  # no Retry-After
        completed(5, 10.0, 8.0),
        record(
            6,
            http_status=200,
            job_id="video_6",
            final_status="failed",
            job_error_code="deadline_exceeded",
            finished_s=20.0,
        ),
        record(
            7,
            http_status=200,
            job_id="video_7",
            final_status="failed",
            job_error_code="out_of_memory",
            finished_s=9.0,
        ),
        record(8, http_status=200, job_id="video_8"),  # never finished
        record(9, transport_error="ConnectError: refused"),
        record(10, http_status=422, error_code="invalid_parameter"),
    ]


def test_percentile_matches_numpy() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    for q in (0, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert Percentiles.of([]).p50 is None and Percentiles.of([]).count == 0


def test_counts_add_up_overall_and_per_tier() -> None:
    report = LoadReport.build({"rate": 1.0, "api_key": "secret"}, 0.0, 12, 25.0, hand_made_records(), [])
    o = report.overall
    assert (o.sent, o.accepted, o.rejected, o.transport_errors) == (11, 7, 3, 1)
    assert o.sent == o.accepted + o.rejected + o.transport_errors
    assert o.accepted == o.completed + sum(o.failed.values()) + o.cancelled + o.lost + o.unfinished
    assert (o.completed, o.failed, o.unfinished) == (4, {"deadline_exceeded": 1, "out_of_memory": 1}, 1)
    assert o.rejected_by_status == {"422": 1, "429": 1, "503": 1}
    assert o.rejected_by_code == {"circuit_open": 1, "deadline_unmeetable": 1, "invalid_parameter": 1}
    assert (o.server_errors, o.rejections_without_retry_after) == (1, 1)
    assert (o.degraded, o.degraded_fields, o.cache_hits, o.repeats) == (1, {"num_inference_steps": 1}, 1, 1)
    assert o.deadline_misses == 1
    assert report.span_s == 20.0 and o.throughput_per_s == pytest.approx(4 / 20.0)
    assert set(report.tiers) == {"realtime", "standard"}
    realtime, standard = report.tiers["realtime"], report.tiers["standard"]
    assert (realtime.sent, realtime.completed, realtime.rejected) == (5, 3, 2)
    assert (standard.sent, standard.completed, standard.rejected, standard.transport_errors) == (6, 1, 1, 1)
    assert realtime.e2e_s.p50 == pytest.approx(2.0) and realtime.e2e_s.max == pytest.approx(4.0)
    assert realtime.queue_wait_s.p95 == pytest.approx(float(np.percentile([0.5, 1.5, 0.0], 95)))
    assert o.e2e_s.count == 4 and o.e2e_s.p99 == pytest.approx(float(np.percentile([2, 4, 0.1, 10], 99)))
    assert "api_key" not in report.config


def test_deadline_misses() -> None:
    def done(**fields: Any) -> RequestRecord:
        return completed(0, 5.0, 1.0, **fields)

    # Without deadline_seconds: the budget from whole-second created_at errs towards no miss.
    assert done(deadline_at=1000.5, created_at=995, completed_at=1001).deadline_missed
    assert done(deadline_at=1000.5, created_at=996, completed_at=1000, total_s=4.6).deadline_missed
    assert not done(deadline_at=1000.5, created_at=995, completed_at=1000, total_s=5.4).deadline_missed
    # With it: exact, unless the server gave a shorter budget (a capped deadline).
    assert done(
        deadline_seconds=5.2, deadline_at=1000.7, created_at=995, completed_at=1000, total_s=5.4
    ).deadline_missed
    assert done(deadline_seconds=60.0, deadline_at=1000.5, created_at=990, completed_at=1001).deadline_missed
    assert not done(
        deadline_seconds=6.0, deadline_at=1001.5, created_at=995, completed_at=1000
    ).deadline_missed
    assert done(deadline_seconds=4.0).deadline_missed  # a server that does not report deadline_at
    assert not done(deadline_seconds=6.0).deadline_missed
    assert not done(deadline_seconds=1.0, cached=True).deadline_missed
    assert not done().deadline_missed


def test_json_round_trip(tmp_path: Path) -> None:
    samples = [QueueSample(t_s=0.5, total=3, by_tier={"realtime": 1, "standard": 2})]
    report = LoadReport.build({"rate": 1.0}, 123.0, 11, 25.0, hand_made_records(), samples)
    path = report.to_json(tmp_path / "report.json")
    assert LoadReport.from_json(path) == report


def test_plot_writes_a_png(tmp_path: Path) -> None:
    samples = [QueueSample(t_s=t, total=t, by_tier={"realtime": t / 2}) for t in (0.5, 1.0, 1.5)]
    report = LoadReport.build(
        {"rate": 1.0, "profile": "poisson"}, 0.0, 11, 25.0, hand_made_records(), samples
    )
    path = report.plot(tmp_path / "report.png")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
    empty = LoadReport.build({}, 0.0, 0, 0.0, [], []).plot(tmp_path / "empty.png")
    assert empty.stat().st_size > 0


def test_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    report = LoadReport.build({}, 0.0, 0, 0.0, [], [])
    with pytest.raises(RuntimeError, match=r"pip install 'reelserve\[bench\]'"):
        report.plot(tmp_path / "x.png")


def test_queue_depth_is_read_from_metrics_text_with_or_without_tiers() -> None:
    text = (
        "# HELP reelserve_queue_depth Jobs waiting to run\n# TYPE reelserve_queue_depth gauge\n"
        "reelserve_queue_depth 5.0\n"
        "# HELP reelserve_tier_queue_depth Jobs waiting per tier\n# TYPE reelserve_tier_queue_depth gauge\n"
        'reelserve_tier_queue_depth{tier="realtime"} 1.0\nreelserve_tier_queue_depth{tier="batch"} 4.0\n'
    )
    sample = _queue_sample(text, 1.5)
    assert (sample.t_s, sample.total, sample.by_tier) == (1.5, 5.0, {"realtime": 1.0, "batch": 4.0})
    bare = _queue_sample("# TYPE reelserve_queue_depth gauge\nreelserve_queue_depth 2\n", 0.0)
    assert (bare.total, bare.by_tier) == (2.0, {})
    assert _queue_sample("", 0.0).total is None
