"""The load probe against a real server (tiny model, loopback): library and CLI, JSON and plot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from support import RunningServer, serve
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.loadgen import LoadConfig, LoadReport, plan_requests, run_load

# Small and fast on the tiny model: a run of a dozen jobs takes a second or two on CPU.
SHAPE = {"num_inference_steps": 2, "size": "32x32", "num_frames": 5}
FINAL = {"completed", "failed", "cancelled", "lost"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(tmp_path_factory.mktemp("loadgen") / "data") as server:
        yield server


def config(running: RunningServer, **overrides: object) -> LoadConfig:
    fields: dict[str, object] = {
        "url": running.url,
        "rate": 20.0,
        "duration_s": 5.0,
        "max_requests": 12,
        "drain_timeout_s": 40.0,
        "params": SHAPE,
        "metrics_interval_s": 0.2,
        "poll_interval_s": 0.05,
    }
    return LoadConfig(**{**fields, **overrides})


async def test_a_mixed_run_accounts_for_every_request(running: RunningServer, tmp_path: Path) -> None:
    cfg = config(
        running,
        tier_mix={"realtime": 0.3, "standard": 0.7},
        repeat_rate=0.3,
        deadlines={"realtime": 60.0, "standard": 300.0},
        allow_degrade=0.5,
    )
    report = await run_load(cfg)
    plan = plan_requests(cfg)
    o = report.overall
    assert report.planned == o.sent == len(plan) == 12  # the cap, not the duration, ended arrivals
    assert o.sent == o.accepted + o.rejected and o.transport_errors == 0
    assert o.accepted == o.completed + sum(o.failed.values()) + o.cancelled + o.lost
    assert o.unfinished == 0 and all(r.final_status in FINAL for r in report.records if r.accepted)
    assert o.completed > 0 and o.e2e_s.count == o.completed and o.e2e_s.p50 is not None
    assert o.throughput_per_s > 0 and o.repeats == sum(p.repeat_of is not None for p in plan) > 0
    assert set(report.tiers) == {p.tier for p in plan} == {"realtime", "standard"}
    assert sum(t.sent for t in report.tiers.values()) == o.sent
    assert sum(t.completed for t in report.tiers.values()) == o.completed
    assert [r.index for r in report.records] == list(range(12))
    assert all(r.priority == r.tier for r in report.records if r.accepted)
    assert report.queue_samples and report.queue_samples[0].total is not None
    assert report.wall_s < cfg.duration_s + cfg.drain_timeout_s + 6

    reread = LoadReport.from_json(report.to_json(tmp_path / "load.json"))
    assert reread == report and "api_key" not in json.loads((tmp_path / "load.json").read_text())["config"]
    png = report.plot(tmp_path / "load.png")
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG" and image.width > 0 and image.height > 0


async def test_replaying_a_finished_body_is_a_cache_hit(running: RunningServer) -> None:
    # Same seed, so request 0 has the same body (seed included) in both runs; the first run has
    # finished, so in the second every request (request 0 and its repeats) is served from the cache.
    first = await run_load(config(running, seed=7, max_requests=1, prompts=["a cache probe circle"]))
    assert first.overall.completed == 1 and first.overall.cache_hits == 0
    second = await run_load(
        config(running, seed=7, max_requests=4, repeat_rate=1.0, prompts=["a cache probe circle"])
    )
    assert second.overall.sent == second.overall.cache_hits == 4
    assert second.overall.repeats == 3 and second.overall.completed == 4


def test_the_cli_runs_a_load_and_writes_json_and_plot(running: RunningServer, tmp_path: Path) -> None:
    out, png = tmp_path / "cli.json", tmp_path / "cli.png"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "load",
            "--url",
            running.url,
            "--rate",
            "20",
            "--duration",
            "5",
            "--max-requests",
            "4",
            "--drain-timeout",
            "40",
            "--tier-mix",
            "realtime:0.5,standard:0.5",
            "--deadline",
            "realtime:60",
            "--allow-degrade",
            "--repeat-rate",
            "0.25",
            "--param",
            "num_inference_steps=2",
            "--param",
            "size=32x32",
            "--param",
            "num_frames=5",
            "--poll-interval",
            "0.05",
            "--seed",
            "3",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "e2e p95 (s)" in result.output and "realtime" in result.output
    report = LoadReport.from_json(out)
    assert report.overall.sent == 4 and report.overall.unfinished == 0
    assert report.config["params"] == {"num_inference_steps": 2, "size": "32x32", "num_frames": 5}
    assert report.config["allow_degrade"] is True
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 0


async def test_the_report_reads_the_real_servers_step_scheduling(running: RunningServer) -> None:
    report = await run_load(config(running, max_requests=2, prompts=["a step counter probe"]))
    step = report.step_scheduling
    # ``serve`` runs without continuous batching or preemption: the counters are there and never move.
    assert (step.joined_rows, step.preempted_rows, step.resumed_steps) == (0.0, 0.0, 0.0)
    assert step.continuous_batching is not True and step.preemption is not True
    assert step.source.startswith(("GET /v1/models", "unknown: the server does not report it"))
