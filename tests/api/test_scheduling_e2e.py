"""Priorities, deadlines, admission, degradation and failure isolation on a real server (tiny model,
real HTTP over loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from support import GatedFamily, RunningServer, final_video, gate_pipeline, serve, sse_events, wait_until

from reelserve.schemas import GenerationParams


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """Embedded only: these tests watch the in-process scheduler (its queue ledger, deadline watch and
    learned batch limits), which the distributed API does not keep (docs/architecture.md)."""
    with serve(tmp_path / "data") as running:
        yield running

SMALL = {"size": "32x32", "num_frames": 5, "num_inference_steps": 2}


def submit(running: RunningServer, **body: object):  # type: ignore[no-untyped-def]
    return running.client.post("/v1/videos", json={"prompt": "a red circle moving right", **SMALL, **body})


def test_under_saturation_realtime_waits_a_third_of_standard_or_less(tmp_path: Path) -> None:
    with serve(tmp_path / "data", max_batch_size=1, max_wait_ms=0) as running:
        ids = {"realtime": [], "standard": []}
        for i in range(32):  # a burst far above what one pipeline drains while it arrives
            tier = "realtime" if i % 8 == 3 else "standard"
            created = submit(running, priority=tier, seed=i, num_inference_steps=6, size="64x64", num_frames=9)
            assert created.status_code == 200, created.text
            ids[tier].append(created.json()["id"])
        waits = {
            tier: [final_video(running, video_id)["timings"]["queue_s"] for video_id in video_ids]
            for tier, video_ids in ids.items()
        }
    p95 = {tier: float(np.percentile(values, 95)) for tier, values in waits.items()}
    assert p95["realtime"] <= p95["standard"] / 3, p95


def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once(server: RunningServer) -> None:
    before = server.client.get("/v1/videos").json()["data"]
    refused = submit(server, deadline_seconds=0.001)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == "deadline_unmeetable" and "deadline" in error["message"]
    assert server.client.get("/v1/videos").json()["data"] == before  # nothing stored, nothing queued

    admitted = submit(server, deadline_seconds=120).json()
    assert admitted["deadline_at"] - admitted["created_at"] <= 121
    assert admitted["created_at"] <= admitted["estimated_completion_at"] <= admitted["deadline_at"]
    assert final_video(server, admitted["id"])["status"] == "completed"


def test_a_queued_job_whose_deadline_passes_never_runs(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    blocker = submit(server, prompt="blocker").json()
    assert gate.entered.wait(30)
    lanes = server.server.engine.runner
    assert lanes is not None
    runner = lanes.runners[0]  # the one lane of a test server
    calls = runner.calls
    doomed = submit(server, deadline_seconds=3).json()
    assert doomed["status"] == "queued"
    failed = final_video(server, doomed["id"])  # while the blocker still holds the pipeline
    assert failed["status"] == "failed" and failed["error"]["code"] == "deadline_exceeded"
    gate.gate.set()
    assert final_video(server, blocker["id"])["status"] == "completed"
    assert runner.calls == calls  # the blocker's call was already counted; the doomed job made none
    assert server.server.store.transitions(doomed["id"]) == [(None, "queued"), ("queued", "failed")]
    metrics = server.client.get("/metrics").text
    assert 'reelserve_deadline_misses_total{kind="expired_in_queue",tier="standard"} 1.0' in metrics


def test_degradation_happens_only_when_allowed_and_is_reported(tmp_path: Path) -> None:
    always_high = [{"name": "high", "min_queue_delay_s": 0, "max_steps": 3, "max_frames": 12}]
    with serve(tmp_path / "data", degrade_levels=always_high) as running:
        kept = final_video(running, submit(running, num_inference_steps=5, num_frames=17, seed=1).json()["id"])
        assert kept["degraded"] is None and kept["num_inference_steps"] == 5 and kept["num_frames"] == 17

        lowered = submit(running, num_inference_steps=5, num_frames=17, seed=2, allow_degrade=True).json()
        assert lowered["degraded"] == {
            "num_inference_steps": {"requested": 5, "ran": 3}, "num_frames": {"requested": 17, "ran": 9},
        }
        assert lowered["degraded_reason"] == "load: high"
        done = final_video(running, lowered["id"])
        assert done["status"] == "completed" and (done["num_inference_steps"], done["num_frames"]) == (3, 9)

        # The batch tier degrades by default; its video is cached under what ran, not what was asked.
        by_tier = submit(running, num_inference_steps=5, num_frames=17, seed=2, priority="batch").json()
        assert by_tier["cached"] is True and by_tier["cache_source_id"] == lowered["id"]
        assert by_tier["degraded"]["num_inference_steps"] == {"requested": 5, "ran": 3}
        exact = submit(running, num_inference_steps=3, num_frames=9, seed=2).json()
        assert exact["cached"] is True and exact["degraded"] is None
        metrics = running.client.get("/metrics").text
        assert 'reelserve_degradations_total{param="num_inference_steps",tier="standard"} 1.0' in metrics


class OomOnMarkedRow(GatedFamily):
    """The gated real family, but a batch holding a prompt marked ``__oom__`` runs out of memory, as
    a row too large for the device would."""

    def __init__(self, real: object) -> None:
        super().__init__(real)
        self.batch_sizes: list[int] = []

    def prepare_rows(self, rows: list[tuple[str, GenerationParams]]) -> object:
        self.batch_sizes.append(len(rows))
        if any("__oom__" in params.prompt for _, params in rows) and self.gate.is_set():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return super().prepare_rows(rows)


def test_an_oom_in_a_batch_of_four_fails_only_the_row_that_cannot_fit(server: RunningServer) -> None:
    lanes = server.server.engine.runner
    assert lanes is not None
    runner = lanes.runners[0]  # the one lane of a test server
    pipeline = OomOnMarkedRow(runner.family)
    runner.family = pipeline
    pipeline.hold()
    blocker = submit(server, prompt="blocker", size="48x48").json()
    assert pipeline.entered.wait(30)
    prompts = ["a red circle", "a blue square", "a huge __oom__ scene", "a green triangle"]
    jobs = [submit(server, prompt=prompt, seed=i).json() for i, prompt in enumerate(prompts)]
    pipeline.gate.set()
    assert final_video(server, blocker["id"])["status"] == "completed"
    results = {job["id"]: final_video(server, job["id"]) for job in jobs}
    statuses = [results[job["id"]]["status"] for job in jobs]
    assert statuses == ["completed", "completed", "failed", "completed"]
    failed = results[jobs[2]["id"]]
    assert failed["error"]["code"] == "out_of_memory"
    assert pipeline.batch_sizes[1:] == [4, 2, 2, 1, 1]  # halves, then the marked half's halves
    assert all(results[job["id"]]["batch_size"] == 4 for job in jobs)
    key = server.server.engine.store.get(jobs[0]["id"]).params.batch_key()
    assert server.server.engine.scheduler.batcher.limit_for(key) == 2  # learned: 4 rows of this shape do not fit


def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_probe(tmp_path: Path) -> None:
    with serve(tmp_path / "data", circuit_failures=2, circuit_cooldown_s=0.5) as running:
        gate_pipeline(running)  # its prompts containing "boom" raise
        for i in range(2):
            failed = final_video(running, submit(running, prompt=f"boom {i}").json()["id"])
            assert failed["status"] == "failed" and failed["error"]["code"] == "generation_failed"
        refused = submit(running)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
        assert int(refused.headers["retry-after"]) >= 1
        assert running.client.get("/readyz").status_code == 503
        gauge = f'reelserve_circuit_state{{model="{running.server.spec.name}"}}'
        assert f"{gauge} 2.0" in running.client.get("/metrics").text

        wait_until(lambda: running.client.get("/readyz").status_code == 200, timeout=30)  # half-open
        probe = submit(running, prompt="the probe")
        assert probe.status_code == 200, probe.text
        assert final_video(running, probe.json()["id"])["status"] == "completed"
        after = submit(running, prompt="business as usual")
        assert after.status_code == 200
        assert f"{gauge} 0.0" in running.client.get("/metrics").text
        assert final_video(running, after.json()["id"])["status"] == "completed"


def test_rate_limits_per_key(tmp_path: Path) -> None:
    tenants = {"key-limited": {"requests_per_minute": 2}, "key-one-at-a-time": {"max_concurrent_jobs": 1}}
    with serve(tmp_path / "data", api_keys=["key-limited", "key-one-at-a-time", "key-free"], tenants=tenants) as running:
        gate = gate_pipeline(running)  # swapped in before any job runs; open until held

        def post(key: str, **body: object):  # type: ignore[no-untyped-def]
            return running.client.post(
                "/v1/videos", json={"prompt": "x", **SMALL, **body}, headers={"Authorization": f"Bearer {key}"}
            )

        assert [post("key-limited", seed=i).status_code for i in range(2)] == [200, 200]
        third = post("key-limited", seed=3)
        assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(third.headers["retry-after"]) <= 30  # one token back at 2/min: 30 s
        assert "2 requests per minute" in third.json()["error"]["message"]
        assert all(post("key-free", seed=i).status_code == 200 for i in range(4))  # others are unaffected

        gate.hold()
        first = post("key-one-at-a-time", seed=10)
        assert first.status_code == 200
        second = post("key-one-at-a-time", seed=11)
        assert second.status_code == 429 and "1 concurrent jobs" in second.json()["error"]["message"]
        gate.gate.set()
        final_video(running, first.json()["id"], key="key-one-at-a-time")
        assert post("key-one-at-a-time", seed=12).status_code == 200  # its job finished: room again


def test_every_job_and_its_events_carry_a_completion_estimate(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    blocker = submit(server, prompt="blocker").json()
    assert gate.entered.wait(30)
    video = submit(server, seed=5).json()
    assert video["status"] == "queued"
    # Behind a running batch: its estimate is after the blocker's, and before its deadline
    assert blocker["estimated_completion_at"] < video["estimated_completion_at"] <= video["deadline_at"]
    with ThreadPoolExecutor(1) as pool:
        events_future = pool.submit(sse_events, server, video["id"])
        wait_until(lambda: server.server.engine.bus.listening_jobs())
        released = time.time()
        gate.gate.set()
        events = events_future.result(timeout=60)
    queued = [e for kind, e in events if kind == "queued"]
    assert queued and queued[0]["estimated_completion_at"] == video["estimated_completion_at"]
    statuses = {e["status"]: e for kind, e in events if kind == "status"}
    running = statuses["in_progress"]
    # Re-estimated when it starts: from the cost model's prediction of its own call, not the queue's
    assert released < running["estimated_completion_at"] < released + 60
    assert statuses["completed"]["estimated_completion_at"] is None  # a final job has no estimate
    done = final_video(server, video["id"])
    assert done["estimated_completion_at"] == running["estimated_completion_at"]
