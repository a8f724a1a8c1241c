"""Pipeline lanes in a real server: batches run on several lanes at once, each lane on its own thread,
and a batch alone on an idle worker borrows every lane's threads until another batch needs a lane."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support import GatedFamily, StepRecorder, final_video, serve, wait_until

from reelserve.engine import finisher
from reelserve.engine.lanes import MachineLoad

SMALL = {"size": "32x32", "num_frames": 5}


def test_two_lanes_run_two_batches_at_once(tmp_path: Path) -> None:
    with serve(tmp_path, pipeline_lanes=2, cpu_threads=2) as running:  # two threads each: no boost
        lanes = running.worker.engine.runner
        assert lanes is not None and lanes.lanes == 2 and lanes.boost is None
        held = GatedFamily(lanes.runners[0].family)
        lanes.runners[0].family = held
        lanes.runners[1].family = recorder = StepRecorder(lanes.runners[1].family)
        held.hold()
        first = running.client.post("/v1/videos", json={"prompt": "holds lane 0", **SMALL}).json()
        assert held.entered.wait(30)
        second = running.client.post("/v1/videos", json={"prompt": "runs beside it", **SMALL}).json()
        done = final_video(running, second["id"])  # while the first is still held on lane 0
        assert done["status"] == "completed"
        assert running.client.get(f"/v1/videos/{first['id']}").json()["status"] == "in_progress"
        assert {name for name, _ in recorder.steps} == {"reelserve-lane-1_0"}
        held.gate.set()
        assert final_video(running, first["id"])["status"] == "completed"


def test_a_lone_batch_borrows_every_lanes_threads_and_gives_them_back_when_another_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MachineLoad, "sample", lambda self: 0.0)  # an idle machine, whatever else runs here
    with serve(tmp_path, pipeline_lanes=2, cpu_threads=1) as running:
        lanes = running.worker.engine.runner
        assert lanes is not None and lanes.boost == 2
        lanes.runners[0].family = lone = StepRecorder(lanes.runners[0].family, hold_at=3)
        lanes.runners[1].family = other = StepRecorder(lanes.runners[1].family)
        first = running.client.post("/v1/videos", json={"prompt": "alone at first", "num_inference_steps": 6, **SMALL})
        assert lone.held.wait(30)  # two steps done, boosted
        second = running.client.post("/v1/videos", json={"prompt": "comes later", **SMALL}).json()
        boost = running.worker.engine.worker.batches.boost
        wait_until(lambda: boost is not None and boost.dropping or None, timeout=30)  # it waits for the lane
        assert not other.steps
        lone.gate.set()
        assert final_video(running, second["id"])["status"] == "completed"
        assert final_video(running, first.json()["id"])["status"] == "completed"
    assert [count for _, count in lone.steps[:2]] == [2, 2]  # every lane's threads while alone
    assert {count for _, count in lone.steps[3:]} == {1}  # its own after the step where it gave them back
    assert {count for _, count in other.steps} == {1}


def test_each_lane_writes_its_own_videos_and_takes_no_batch_until_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU the lane's thread encodes its batch's videos; while it does, the next batch goes to
    another lane."""
    writers: dict[str, int] = {}  # thread -> videos it encoded
    gate, holding = threading.Event(), threading.Event()

    def encode(frames: Any, fps: int) -> bytes:
        name = threading.current_thread().name
        writers[name] = writers.get(name, 0) + 1
        if name.startswith("reelserve-pipeline") and not gate.is_set():
            holding.set()
            assert gate.wait(60), "the test never opened the gate"
        return real_encode(frames, fps)

    real_encode = finisher.encode_mp4
    monkeypatch.setattr(finisher, "encode_mp4", encode)
    with serve(tmp_path, pipeline_lanes=2, cpu_threads=2) as running:  # two threads each: no boost
        first = running.client.post("/v1/videos", json={"prompt": "written on lane 0", **SMALL}).json()
        assert holding.wait(30)  # lane 0 ran it and is writing its video
        second = running.client.post("/v1/videos", json={"prompt": "goes to lane 1", **SMALL}).json()
        assert final_video(running, second["id"])["status"] == "completed"  # while lane 0 still writes
        assert running.client.get(f"/v1/videos/{first['id']}").json()["status"] == "in_progress"
        gate.set()
        assert final_video(running, first["id"])["status"] == "completed"
    assert writers == {"reelserve-pipeline_0": 1, "reelserve-lane-1_0": 1}
