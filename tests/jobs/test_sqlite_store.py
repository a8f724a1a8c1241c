"""SqliteJobStore: the JobStore contract, durability across reopen, and thread safety."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reelserve.jobs import JobStore, SqliteJobStore
from reelserve.schemas import GenerationParams, Job, JobError, JobStatus

PARAMS = GenerationParams(
    model="tiny",
    prompt="a red fox in the snow",
    width=64,
    height=48,
    num_frames=9,
    fps=8,
    num_inference_steps=2,
    guidance_scale=5.0,
    seed=1234,
)


def make_job(index: int = 0, **changes: object) -> Job:
    return Job(id=f"video_{index:04d}", params=PARAMS, created_at=1_700_000_000.0 + index, **changes)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(db_path)
    yield s
    s.close()


def test_satisfies_the_protocol(store: SqliteJobStore) -> None:
    backend: JobStore = store
    assert backend.get("video_missing") is None


def test_create_get_round_trip(store: SqliteJobStore) -> None:
    job = make_job(1, batch_size=2, attempts=1)
    store.create(job)
    assert store.get(job.id) == job


def test_duplicate_create_raises_and_keeps_the_original(store: SqliteJobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(ValueError):
        store.create(make_job(1, progress=50))
    stored = store.get("video_0001")
    assert stored is not None and stored.progress == 0
    assert store.transitions("video_0001") == [(None, "queued")]


def test_list_pages_newest_first(store: SqliteJobStore) -> None:
    for i in range(7):
        store.create(make_job(i))
    page1 = store.list(limit=3)
    page2 = store.list(limit=3, after=page1[-1].id)
    page3 = store.list(limit=3, after=page2[-1].id)
    assert [j.id for j in page1] == ["video_0006", "video_0005", "video_0004"]
    assert [j.id for j in page2] == ["video_0003", "video_0002", "video_0001"]
    assert [j.id for j in page3] == ["video_0000"]
    assert store.list(limit=3, after="video_0000") == []
    assert [j.id for j in store.list(limit=100)] == [f"video_{i:04d}" for i in range(6, -1, -1)]
    assert store.list(limit=0) == []


def test_list_orders_by_insertion_not_created_at(store: SqliteJobStore) -> None:
    store.create(make_job(5))
    store.create(make_job(1))  # inserted later with an older timestamp
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0005"]


def test_list_with_unknown_cursor_raises_key_error(store: SqliteJobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(KeyError):
        store.list(limit=10, after="video_nope")


def test_list_rejects_negative_limit(store: SqliteJobStore) -> None:
    with pytest.raises(ValueError):
        store.list(limit=-1)


def test_save_writes_and_logs_transitions(store: SqliteJobStore) -> None:
    job = make_job(1)
    store.create(job)
    running = job.model_copy(update={"status": JobStatus.in_progress, "started_at": 1.0})
    assert store.save(running, expect={JobStatus.queued})
    halfway = running.model_copy(update={"progress": 50})
    assert store.save(halfway)  # no status change: no transition
    done = halfway.model_copy(update={"status": JobStatus.completed, "progress": 100, "video_key": "v.mp4"})
    assert store.save(done, expect={JobStatus.in_progress})
    assert store.get(job.id) == done
    assert store.transitions(job.id) == [
        (None, "queued"),
        ("queued", "in_progress"),
        ("in_progress", "completed"),
    ]


def test_cancelled_job_cannot_be_saved_as_completed(store: SqliteJobStore) -> None:
    job = make_job(1, status=JobStatus.in_progress)
    store.create(job)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled})
    assert store.save(cancelled, expect={JobStatus.queued, JobStatus.in_progress})
    completed = job.model_copy(update={"status": JobStatus.completed, "progress": 100})
    assert not store.save(completed, expect={JobStatus.in_progress})
    assert store.get(job.id) == cancelled
    assert store.transitions(job.id) == [(None, "in_progress"), ("in_progress", "cancelled")]


def test_save_of_missing_job_returns_false_and_creates_nothing(store: SqliteJobStore) -> None:
    assert not store.save(make_job(9))
    assert not store.save(make_job(9), expect={JobStatus.queued})
    assert store.get("video_0009") is None
    assert store.transitions("video_0009") == []


def test_unfinished_oldest_first(store: SqliteJobStore) -> None:
    statuses = [
        JobStatus.completed,
        JobStatus.queued,
        JobStatus.in_progress,
        JobStatus.failed,
        JobStatus.queued,
        JobStatus.cancelled,
    ]
    for i, status in enumerate(statuses):
        store.create(make_job(i, status=status))
    assert [j.id for j in store.unfinished()] == ["video_0001", "video_0002", "video_0004"]


def test_count_by_status_has_every_key(store: SqliteJobStore) -> None:
    assert store.count_by_status() == dict.fromkeys(JobStatus, 0)
    store.create(make_job(1))
    store.create(make_job(2))
    store.create(
        make_job(3, status=JobStatus.failed, error=JobError(code="generation_failed", message="oom"))
    )
    counts = store.count_by_status()
    assert set(counts) == set(JobStatus)
    assert counts[JobStatus.queued] == 2
    assert counts[JobStatus.failed] == 1
    assert counts[JobStatus.completed] == 0


def test_delete_removes_job_and_transitions(store: SqliteJobStore) -> None:
    store.create(make_job(1))
    store.create(make_job(2))
    assert store.delete("video_0001")
    assert not store.delete("video_0001")
    assert store.get("video_0001") is None
    assert store.transitions("video_0001") == []
    assert [j.id for j in store.list(limit=10)] == ["video_0002"]
    store.create(make_job(1))  # the id is free again, and sorts as the newest
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0002"]


def test_reopen_from_file_keeps_everything(db_path: Path) -> None:
    first = SqliteJobStore(db_path)
    first.create(make_job(1))
    first.create(make_job(2))
    running = make_job(1, status=JobStatus.in_progress, started_at=5.0)
    assert first.save(running)
    first.close()

    # A restart: a new object on the same file sees every committed job and can keep going.
    second = SqliteJobStore(db_path)
    try:
        assert second.get("video_0001") == running
        assert [j.id for j in second.unfinished()] == ["video_0001", "video_0002"]
        assert second.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
        second.create(make_job(3))
        assert [j.id for j in second.list(limit=10)] == ["video_0003", "video_0002", "video_0001"]
    finally:
        second.close()


def test_writes_are_visible_to_another_connection_without_close(store: SqliteJobStore, db_path: Path) -> None:
    store.create(make_job(1))
    other = SqliteJobStore(db_path)
    try:
        assert other.get("video_0001") == make_job(1)
    finally:
        other.close()


def test_database_is_wal_with_full_sync(store: SqliteJobStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    # synchronous is per connection: ask the store's own (2 == FULL).
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_close_is_idempotent(db_path: Path) -> None:
    s = SqliteJobStore(db_path)
    s.close()
    s.close()
    with pytest.raises(sqlite3.ProgrammingError):
        s.get("video_0001")


def test_concurrent_saves_lose_nothing(store: SqliteJobStore) -> None:
    threads_n, saves_each = 4, 50
    for t in range(threads_n):
        store.create(make_job(t))
    start = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        start.wait(timeout=30)
        job = store.get(f"video_{t:04d}")
        assert job is not None
        for step in range(1, saves_each + 1):
            status = JobStatus.in_progress if step % 2 else JobStatus.queued
            job = job.model_copy(update={"status": status, "attempts": step})
            assert store.save(job, expect={JobStatus.queued, JobStatus.in_progress})
            store.list(limit=5)  # interleave reads on the same connection

    with ThreadPoolExecutor(max_workers=threads_n) as pool:
        for future in [pool.submit(worker, t) for t in range(threads_n)]:
            future.result(timeout=30)  # re-raises a worker's failure here
    for t in range(threads_n):
        job = store.get(f"video_{t:04d}")
        assert job is not None and job.attempts == saves_each and job.status == JobStatus.queued
        log = store.transitions(job.id)
        assert len(log) == 1 + saves_each  # the create, then one transition per save
        assert log[0] == (None, "queued")
        assert all(a != b for a, b in log[1:])


def test_concurrent_compare_and_set_has_one_winner(store: SqliteJobStore) -> None:
    # Many threads race to move one queued job forward; exactly one may win.
    store.create(make_job(1))
    racers = 8
    start = threading.Barrier(racers)

    def racer(i: int) -> bool:
        start.wait(timeout=30)
        return store.save(make_job(1, status=JobStatus.in_progress, attempts=i), expect={JobStatus.queued})

    with ThreadPoolExecutor(max_workers=racers) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(racer, i) for i in range(racers)]]
    assert sorted(results) == [False] * (racers - 1) + [True]
    assert store.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
