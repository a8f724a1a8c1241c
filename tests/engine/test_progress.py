"""StepProgress against a real SQLite store: which steps make events, and when progress is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelserve.engine.progress import PERSIST_S, StepProgress
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.schemas import GenerationParams, Job, JobStatus

PARAMS = GenerationParams(model="tiny", prompt="a fox", width=64, height=48, num_frames=9, fps=8,
                          num_inference_steps=8, guidance_scale=5.0, seed=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    for name in ("a", "b"):
        store.create(Job(id=f"video_{name}", params=PARAMS, created_at=1.0, status=JobStatus.in_progress))
    return store


def writes(store: SqliteJobStore, job_id: str) -> int:
    """The job's stored progress (what a poller sees)."""
    job = store.get(job_id)
    assert job is not None
    return job.progress


def test_a_run_shorter_than_the_persist_interval_writes_no_progress(store: SqliteJobStore) -> None:
    clock = Clock()
    progress = StepProgress(store, set(), shared_queue=False, clock=clock)
    for step in range(1, 9):
        clock.now += (PERSIST_S * 0.9) / 8  # the whole run inside one interval
        assert len(progress.on_step(["video_a"], step, 8)) == 1
    assert writes(store, "video_a") == 0  # not even the first or the last step


def test_a_long_run_writes_progress_each_interval_and_at_its_last_step(store: SqliteJobStore) -> None:
    clock = Clock()
    progress = StepProgress(store, set(), shared_queue=False, clock=clock)
    seen = []
    for step in range(1, 9):
        progress.on_step(["video_a"], step, 8)
        seen.append(writes(store, "video_a"))
        clock.now += PERSIST_S * 0.4
    # steps 1..8 at 0, .4, .8, ... 2.8 intervals: written at step 4 (1.2 intervals in), step 7 (1.2
    # since), and at the last step (99 %: the video is being written)
    assert seen == [0, 0, 0, 50, 50, 50, 87, 99]


def test_steps_nobody_follows_make_no_events(store: SqliteJobStore) -> None:
    followed = {"video_b"}
    progress = StepProgress(store, set(), shared_queue=False, followed=followed.__contains__, clock=Clock())
    events = progress.on_step(["video_a", "video_b"], 1, 8)
    assert [(e.job_id, e.step, e.total_steps) for e in events] == [("video_b", 1, 8)]
    followed.clear()
    assert progress.on_step(["video_a", "video_b"], 2, 8) == []


def test_a_shared_queue_notices_a_cancel_at_the_next_step(store: SqliteJobStore) -> None:
    stop: set[str] = set()
    progress = StepProgress(store, stop, shared_queue=True, clock=Clock())
    assert len(progress.on_step(["video_a", "video_b"], 1, 8)) == 2
    cancelled = store.get("video_a")
    assert cancelled is not None
    cancelled.status = JobStatus.cancelled
    store.save(cancelled)
    events = progress.on_step(["video_a", "video_b"], 2, 8)
    assert [e.job_id for e in events] == ["video_b"] and stop == {"video_a"}
