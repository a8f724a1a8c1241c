"""Continuous batching over real HTTP, in both modes: a job sent while a batch of its shape runs
joins that batch (another step count and guidance), streams its own progress, and is downloadable
before the batch it joined ends; a cancelled joiner leaves without a video."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import STEP_SCHEDULING, RunningServer, StepRecorder, serve_in_mode, sse_events, wait_until

from reelserve.video import probe_mp4


@pytest.fixture(params=["embedded", "distributed"])
def joining(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_mode(request.param, tmp_path, **STEP_SCHEDULING) as running:
        yield running


def hold_before_step(running: RunningServer, step: int) -> StepRecorder:
    lanes = running.worker.engine.runner
    assert lanes is not None and lanes.lanes == 1
    lanes.runners[0].family = held = StepRecorder(lanes.runners[0].family, hold_at=step)
    return held


class HeldTwice(StepRecorder):
    """Holds before step ``hold_at`` (``gate``) and again before ``then`` (``gate2``) of the row first
    in its evaluation."""

    def __init__(self, real: object, hold_at: int, then: int) -> None:
        super().__init__(real, hold_at)
        self.then, self.gate2, self.held2 = then, threading.Event(), threading.Event()

    def denoise_step(self, rows: list[Any]) -> Any:
        if rows[0].step + 1 == self.then:
            self.held2.set()
            assert self.gate2.wait(60), "the test never opened the second gate"
        return super().denoise_step(rows)


def status(running: RunningServer, video_id: str) -> str:
    return running.client.get(f"/v1/videos/{video_id}").json()["status"]


def joined_rows(running: RunningServer) -> float:
    for line in running.client.get(running.worker_url + "/metrics").text.splitlines():
        if line.startswith("reelserve_joined_rows_total "):
            return float(line.split()[1])
    raise AssertionError("no reelserve_joined_rows_total in the worker's metrics")


def test_a_job_joins_a_running_batch_streams_and_is_ready_before_it_ends(joining: RunningServer) -> None:
    lanes = joining.worker.engine.runner
    assert lanes is not None and lanes.lanes == 1
    # The joiner comes in at the boundary after step 2 and runs its 3 steps beside steps 3-5 of the
    # long one, which is held again before its step 8.
    lanes.runners[0].family = held = HeldTwice(lanes.runners[0].family, hold_at=2, then=8)
    try:
        shape = {"size": "32x32", "num_frames": 5}
        first = joining.client.post("/v1/videos", json={"prompt": "a long one", "num_inference_steps": 12, **shape})
        assert held.held.wait(30)
        joiner = joining.client.post("/v1/videos", json={"prompt": "a short one", "num_inference_steps": 3,
                                                         "guidance_scale": 2.5, "fps": 12, **shape}).json()
        wait_until(lambda: status(joining, joiner["id"]) == "in_progress")  # claimed to join the held batch
        with ThreadPoolExecutor(1) as pool:
            streamed = pool.submit(sse_events, joining, joiner["id"])
            wait_until(lambda: joining.server.engine.bus.listening_jobs())
            held.gate.set()
            events = streamed.result(timeout=60)
        steps = [(e["step"], e["total_steps"]) for kind, e in events if kind == "progress"]
        assert steps == [(1, 3), (2, 3), (3, 3)]
        assert [e["status"] for kind, e in events if kind == "status"][-1] == "completed"
        video = joining.client.get(f"/v1/videos/{joiner['id']}/content")
        assert video.status_code == 200
        info = probe_mp4(video.content)
        assert (info.frames, info.width, info.height, info.fps) == (5, 32, 32, 12.0)
        assert held.held2.wait(30)
        assert status(joining, first.json()["id"]) == "in_progress"  # the batch it joined goes on
        held.gate2.set()
        wait_until(lambda: status(joining, first.json()["id"]) == "completed")
        assert joined_rows(joining) == 1
    finally:
        held.gate.set()
        held.gate2.set()


def test_a_joiner_cancelled_while_it_runs_leaves_without_a_video(joining: RunningServer) -> None:
    held = hold_before_step(joining, 3)
    try:
        shape = {"size": "32x32", "num_frames": 5}
        first = joining.client.post("/v1/videos", json={"prompt": "stays", "num_inference_steps": 6, **shape}).json()
        assert held.held.wait(30)
        joiner = joining.client.post("/v1/videos", json={"prompt": "leaves", "num_inference_steps": 6, **shape}).json()
        wait_until(lambda: status(joining, joiner["id"]) == "in_progress")
        assert joined_rows(joining) == 1
        assert joining.client.post(f"/v1/videos/{joiner['id']}/cancel").json()["status"] == "cancelled"
        held.gate.set()
        wait_until(lambda: status(joining, first["id"]) == "completed")
        assert status(joining, joiner["id"]) == "cancelled"
        assert joining.client.get(f"/v1/videos/{joiner['id']}/content").status_code == 409
    finally:
        held.gate.set()


def test_a_realtime_job_preempts_a_running_batch_job_which_resumes(joining: RunningServer) -> None:
    held = hold_before_step(joining, 3)
    try:
        slow = joining.client.post("/v1/videos", json={"prompt": "batch work", "size": "32x32", "num_frames": 5,
                                                       "num_inference_steps": 8, "priority": "batch"}).json()
        assert held.held.wait(30)
        urgent = joining.client.post("/v1/videos", json={"prompt": "now", "size": "48x32", "num_frames": 5,
                                                         "num_inference_steps": 3, "priority": "realtime"}).json()
        held.gate.set()
        wait_until(lambda: status(joining, slow["id"]) == "completed")
        slow_done = joining.client.get(f"/v1/videos/{slow['id']}").json()
        urgent_done = joining.client.get(f"/v1/videos/{urgent['id']}").json()
        assert urgent_done["status"] == "completed" and urgent_done["preempted"] == 0
        assert slow_done["preempted"] == 1 and slow_done["progress"] == 100
        assert len(held.steps) == 8 + 3  # the parked row went on from its step
        info = probe_mp4(joining.client.get(f"/v1/videos/{slow['id']}/content").content)
        assert (info.frames, info.width, info.height) == (5, 32, 32)
        metrics = joining.client.get(joining.worker_url + "/metrics").text
        assert "reelserve_preempted_rows_total 1.0" in metrics
    finally:
        held.gate.set()
