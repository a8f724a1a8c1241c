"""A load report says which step scheduling the server ran with (its settings when it reports them, and
what its counters saw), and ``bench compare`` puts two reports side by side per tier with B/A."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.loadgen import LoadConfig, LoadReport, RequestRecord, run_load
from reelserve.loadgen.compare import compare_reports
from reelserve.loadgen.step_scheduling import StepScheduling, counters_of, settings_of

COUNTERS_TEXT = (  # as prometheus_client writes counters
    "# TYPE reelserve_joined_rows_total counter\nreelserve_joined_rows_total {joined}\n"
    "# TYPE reelserve_preempted_rows_total counter\nreelserve_preempted_rows_total {preempted}\n"
    "# TYPE reelserve_queue_depth gauge\nreelserve_queue_depth 0\n"
)


def test_settings_are_read_from_the_model_object_or_left_unknown() -> None:
    on_off = settings_of({"data": [{"id": "tiny", "step_scheduling": {"continuous_batching": True, "preemption": False}}]})
    assert (on_off.continuous_batching, on_off.preemption) == (True, False)
    assert on_off.source == "GET /v1/models: data[0].step_scheduling"
    for answer in ({"data": [{"id": "tiny"}]}, {"data": []}, [], "nonsense", None):
        unknown = settings_of(answer)
        assert (unknown.continuous_batching, unknown.preemption) == (None, None)
        assert unknown.source.startswith("unknown: the server does not report it")
    odd = settings_of({"data": [{"step_scheduling": {"continuous_batching": "yes", "preemption": False}}]})
    assert (odd.continuous_batching, odd.preemption) == (None, False)  # only booleans count


def test_counters_are_read_from_metrics_text() -> None:
    assert counters_of(COUNTERS_TEXT.format(joined=3, preempted=1)) == {"joined_rows": 3.0, "preempted_rows": 1.0}
    assert counters_of("# TYPE reelserve_queue_depth gauge\nreelserve_queue_depth 2\n") == {}
    assert counters_of("<html>not metrics</html>") == {}


def test_the_label_says_what_is_known_and_what_was_seen() -> None:
    assert StepScheduling(continuous_batching=True, preemption=False).label() == "continuous batching on, preemption off"
    seen = StepScheduling(joined_rows=3.0, preempted_rows=0.0).label()
    assert seen == "continuous batching on (seen in /metrics), preemption unknown (seen: 3 rows joined, 0 preempted)"
    moved = StepScheduling().with_counters({"joined_rows": 2.0, "preempted_rows": 1.0}, {"joined_rows": 7.0})
    assert (moved.joined_rows, moved.preempted_rows) == (5.0, None)  # preempted_rows missing after: unknown


class CountingServer:
    """Answers every job at once, completed; each job it accepts counts one joined row."""

    def __init__(self, models: dict[str, Any] | None) -> None:
        self.models, self.jobs = models, 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json=self.models) if self.models is not None else httpx.Response(404)
        if path == "/metrics":
            return httpx.Response(200, text=COUNTERS_TEXT.format(joined=10 + self.jobs, preempted=4))
        self.jobs += 1
        video = {"id": f"video_{self.jobs}", "status": "completed", "priority": "standard",
                 "timings": {"queue_s": 0.1, "total_s": 0.5}}
        return httpx.Response(200, json=video)


@pytest.mark.parametrize("reports_settings", [True, False], ids=["reported", "not-reported"])
async def test_a_run_records_the_servers_step_scheduling(reports_settings: bool) -> None:
    models = {"data": [{"id": "tiny", "step_scheduling": {"continuous_batching": True, "preemption": True}}]}
    server = CountingServer(models if reports_settings else None)
    config = LoadConfig(url="http://reelserve.test", rate=50.0, duration_s=0.2, max_requests=5, drain_timeout_s=5.0)
    report = await run_load(config, transport=httpx.MockTransport(server.handle))
    step = report.step_scheduling
    assert report.overall.completed == server.jobs > 0
    assert step.joined_rows == server.jobs and step.preempted_rows == 0.0 and step.resumed_steps is None
    if reports_settings:
        assert (step.continuous_batching, step.preemption) == (True, True)
    else:
        assert (step.continuous_batching, step.preemption) == (None, None)
        assert step.source == "unknown: GET /v1/models answered 404"
        assert step.label().startswith("continuous batching on (seen in /metrics), preemption unknown")


def stats_report(step: StepScheduling, tiers: dict[str, list[float]], span_s: float) -> LoadReport:
    """A report whose tiers completed jobs with these end-to-end seconds."""
    records = []
    for tier, latencies in tiers.items():
        for e2e in latencies:
            index = len(records)
            records.append(RequestRecord(index=index, tier=tier, scheduled_s=0.0, sent_s=0.0, http_status=200,
                                         job_id=f"video_{index}", final_status="completed", finished_s=e2e))
    report = LoadReport.build(config={}, started_at=0.0, planned=len(records), wall_s=span_s, records=records,
                              queue_samples=[], step_scheduling=step)
    assert report.span_s == max(e2e for latencies in tiers.values() for e2e in latencies)
    return report


ON = StepScheduling(continuous_batching=True, preemption=True, source="test")
OFF = StepScheduling(continuous_batching=False, preemption=False, source="test")


def test_compare_gives_each_tier_both_values_and_b_over_a() -> None:
    a = stats_report(ON, {"realtime": [1.0, 2.0, 3.0], "standard": [10.0]}, 10.0)
    b = stats_report(OFF, {"realtime": [2.0, 4.0, 6.0], "batch": [20.0]}, 20.0)
    rows = {(row.tier, row.metric): row for row in compare_reports(a, b)}
    assert {tier for tier, _ in rows} == {"realtime", "standard", "batch", "all"}
    p50 = rows[("realtime", "e2e p50 (s)")]
    assert (p50.a, p50.b, p50.ratio) == (2.0, 4.0, 2.0)
    assert rows[("realtime", "e2e p95 (s)")].ratio == pytest.approx(2.0)
    done = rows[("realtime", "completed/s")]
    assert (done.a, done.b, done.ratio) == (pytest.approx(0.3), pytest.approx(0.15), pytest.approx(0.5))
    assert (rows[("standard", "completed")].a, rows[("standard", "completed")].b) == (1.0, None)
    assert rows[("standard", "completed")].ratio is None and rows[("batch", "e2e p99 (s)")].a is None
    assert (rows[("all", "completed")].a, rows[("all", "completed")].ratio) == (4.0, 1.0)


def test_bench_compare_prints_both_runs_side_by_side(tmp_path: Path) -> None:
    a = stats_report(ON, {"realtime": [1.0, 2.0, 3.0]}, 3.0).to_json(tmp_path / "a.json")
    b = stats_report(OFF, {"realtime": [2.0, 4.0, 6.0]}, 6.0).to_json(tmp_path / "b.json")
    out = tmp_path / "compare.json"
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "step scheduling: continuous batching on, preemption on" in result.output
    assert "step scheduling: continuous batching off, preemption off" in result.output
    assert "e2e p50 (s)" in result.output and "2.000" in result.output  # realtime p50 4.0 / 2.0
    document = json.loads(out.read_text())
    assert document["b_step_scheduling"]["continuous_batching"] is False
    realtime_p95 = next(r for r in document["rows"] if (r["tier"], r["metric"]) == ("realtime", "e2e p95 (s)"))
    assert realtime_p95["ratio"] == pytest.approx(2.0)


def test_bench_compare_refuses_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    good = stats_report(ON, {"realtime": [1.0]}, 1.0).to_json(tmp_path / "a.json")
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"not": "a report"}))
    result = CliRunner().invoke(app, ["bench", "compare", str(good), str(bad)])
    assert result.exit_code == 2 and "not a load report" in result.output


def test_a_report_written_before_step_scheduling_was_recorded_still_reads(tmp_path: Path) -> None:
    document = json.loads(stats_report(ON, {"realtime": [1.0]}, 1.0).model_dump_json())
    del document["step_scheduling"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    assert LoadReport.from_json(path).step_scheduling == StepScheduling()
