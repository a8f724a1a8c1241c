"""The JobStore contract, run against every implementation: SqliteJobStore on a file, and
RedisJobStore on a real private redis-server (which fails, not skips, without redis-server).

What only one implementation has is tested in its own file (test_sqlite_store.py,
test_redis_store.py). PARAMS, make_job and finish are shared with those files."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from reelserve.jobs import JobStore, SqliteJobStore
from reelserve.jobs.redis_store import RedisJobStore
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
NONE = dict.fromkeys(JobStatus, 0)  # count_by_status() of an empty store


def make_job(index: int = 0, **changes: object) -> Job:
    return Job(id=f"video_{index:04d}", params=PARAMS, created_at=1_700_000_000.0 + index, **changes)


def finish(job: Job, status: JobStatus = JobStatus.completed) -> Job:
    return job.model_copy(update={"status": status, "progress": 100})


@dataclass
class Backend:
    """One implementation under test, with what the contract needs to know about it."""

    store: JobStore
    open_another: Callable[[], JobStore]
    """A second store on the same data over its own connection (SQLite) or client (Redis), as another
    process (or the same one after a restart) would have; closed by the fixture."""
    leftovers: Callable[[], list[str]]
    """Whatever is stored underneath, any table row or key at all: [] when nothing was ever written."""
    closed_error: type[Exception]
    """What every call but close() raises once the store is closed."""


def _sqlite_backend(tmp_path: Path, opened: list[Callable[[], None]]) -> Backend:
    db_path = tmp_path / "state" / "jobs.db"  # the directory is created by the store

    def open_another() -> JobStore:
        other = SqliteJobStore(db_path)
        opened.append(other.close)
        return other

    def leftovers() -> list[str]:
        conn = sqlite3.connect(db_path)
        try:
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return [t for t in tables if conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]]
        finally:
            conn.close()

    return Backend(open_another(), open_another, leftovers, sqlite3.ProgrammingError)


def _redis_backend(request: pytest.FixtureRequest, opened: list[Callable[[], None]]) -> Backend:
    redis_server = request.getfixturevalue("redis_server")
    client = redis_server.client()
    opened.append(client.close)

    def open_another() -> JobStore:
        own_client = redis_server.client()
        opened.append(own_client.close)
        other = RedisJobStore(own_client)
        opened.append(other.close)
        return other

    def leftovers() -> list[str]:
        return [key.decode() for key in client.keys("*")]

    store = RedisJobStore(client)
    opened.append(store.close)
    return Backend(store, open_another, leftovers, RuntimeError)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[Callable[[], None]] = []
    try:
        if request.param == "sqlite":
            yield _sqlite_backend(tmp_path, opened)
        else:
            yield _redis_backend(request, opened)
    finally:
        for close in reversed(opened):
            close()


@pytest.fixture
def store(backend: Backend) -> JobStore:
    return backend.store


def test_satisfies_the_protocol(store: JobStore) -> None:
    # Statically, Backend.store (typed JobStore) is where each implementation meets the protocol.
    members = [name for name in vars(JobStore) if not name.startswith("_")]
    assert "save" in members and all(callable(getattr(store, name)) for name in members)
    assert store.get("video_missing") is None


def test_create_get_round_trip(store: JobStore) -> None:
    job = make_job(1, batch_size=2, attempts=1, tenant="acme")
    store.create(job)
    assert store.get(job.id) == job


def test_duplicate_create_raises_and_keeps_the_original(store: JobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(ValueError):
        store.create(make_job(1, progress=50))
    stored = store.get("video_0001")
    assert stored is not None and stored.progress == 0
    assert store.transitions("video_0001") == [(None, "queued")]


def test_list_for_tenant_pages_only_that_tenants_jobs(store: JobStore) -> None:
    for i in range(6):
        store.create(make_job(i, tenant="acme" if i % 2 else "globex"))
    store.create(make_job(9))  # no tenant (auth off)
    page1 = store.list_for_tenant("acme", limit=2)
    assert [j.id for j in page1] == ["video_0005", "video_0003"]
    assert [j.id for j in store.list_for_tenant("acme", limit=2, after="video_0003")] == ["video_0001"]
    assert [j.id for j in store.list_for_tenant("globex", limit=10)] == ["video_0004", "video_0002", "video_0000"]
    assert store.list_for_tenant("initech", limit=10) == []
    with pytest.raises(KeyError):  # a cursor of another tenant's job: not a page of this one
        store.list_for_tenant("acme", limit=2, after="video_0004")
    with pytest.raises(ValueError):
        store.list_for_tenant("acme", limit=-1)


def test_list_pages_newest_first(store: JobStore) -> None:
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


def test_list_orders_by_insertion_not_created_at(store: JobStore) -> None:
    store.create(make_job(5))
    store.create(make_job(1))  # inserted later with an older timestamp
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0005"]


def test_list_with_unknown_cursor_raises_key_error(store: JobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(KeyError):
        store.list(limit=10, after="video_nope")
    with pytest.raises(KeyError):
        store.list(limit=0, after="video_nope")


def test_list_rejects_negative_limit(store: JobStore) -> None:
    with pytest.raises(ValueError):
        store.list(limit=-1)


def test_save_writes_and_logs_transitions(store: JobStore) -> None:
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


def test_cancelled_job_cannot_be_saved_as_completed(store: JobStore) -> None:
    job = make_job(1, status=JobStatus.in_progress)
    store.create(job)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled})
    assert store.save(cancelled, expect={JobStatus.queued, JobStatus.in_progress})
    completed = job.model_copy(update={"status": JobStatus.completed, "progress": 100})
    assert not store.save(completed, expect={JobStatus.in_progress})
    assert not store.save(completed, expect=set())
    assert store.get(job.id) == cancelled
    assert store.transitions(job.id) == [(None, "in_progress"), ("in_progress", "cancelled")]


def test_save_of_missing_job_returns_false_and_creates_nothing(backend: Backend) -> None:
    store = backend.store
    assert not store.save(make_job(9))
    assert not store.save(make_job(9), expect={JobStatus.queued})
    assert store.get("video_0009") is None
    assert store.transitions("video_0009") == []
    assert backend.leftovers() == []


def test_unfinished_oldest_first(store: JobStore) -> None:
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
    assert store.save(finish(make_job(1)))  # finishing leaves the list, going back to queued rejoins it
    assert store.save(make_job(3, status=JobStatus.queued))
    assert [j.id for j in store.unfinished()] == ["video_0002", "video_0003", "video_0004"]


def test_count_by_status_has_every_key(store: JobStore) -> None:
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
    assert store.save(finish(make_job(1)))
    assert store.count_by_status() == {**NONE, "queued": 1, "failed": 1, "completed": 1}


def test_delete_removes_job_and_transitions(store: JobStore) -> None:
    store.create(make_job(1))
    store.create(make_job(2))
    assert store.delete("video_0001")
    assert not store.delete("video_0001")
    assert store.get("video_0001") is None
    assert store.transitions("video_0001") == []
    assert [j.id for j in store.list(limit=10)] == ["video_0002"]
    assert store.count_by_status()[JobStatus.queued] == 1
    assert [j.id for j in store.unfinished()] == ["video_0002"]
    store.create(make_job(1))  # the id is free again, and sorts as the newest
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0002"]


def test_a_new_store_on_the_same_data_keeps_everything(backend: Backend) -> None:
    first = backend.store
    first.create(make_job(1))
    first.create(make_job(2))
    running = make_job(1, status=JobStatus.in_progress, started_at=5.0)
    assert first.save(running)
    first.close()

    # A restart: a new store on the same file / Redis sees every committed job and can keep going.
    second = backend.open_another()
    assert second.get("video_0001") == running
    assert [j.id for j in second.unfinished()] == ["video_0001", "video_0002"]
    assert second.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
    second.create(make_job(3))
    assert [j.id for j in second.list(limit=10)] == ["video_0003", "video_0002", "video_0001"]


def test_a_job_inserted_without_waiting_for_the_disk_is_a_job_like_any_other(backend: Backend) -> None:
    # What a power cut may lose is not testable here; what every caller sees is: the same job, made
    # durable on request, kept across a restart.
    store = backend.store
    store.create(make_job(1), durable=False)
    store.create(finish(make_job(2)), durable=False)  # final: durable regardless
    store.make_durable()
    other = backend.open_another()
    assert other.get("video_0001") == make_job(1)
    assert other.transitions("video_0002") == [(None, "completed")]
    store.close()
    assert [j.id for j in backend.open_another().unfinished()] == ["video_0001"]


def test_writes_are_visible_to_another_store_at_once(backend: Backend) -> None:
    # The other store has its own connection / client, and neither is closed in between.
    store, other = backend.store, backend.open_another()
    store.create(make_job(1))
    assert other.get("video_0001") == make_job(1)
    assert other.save(make_job(1, status=JobStatus.in_progress), expect={JobStatus.queued})
    stored = store.get("video_0001")
    assert stored is not None and stored.status == JobStatus.in_progress


def test_close_is_idempotent(backend: Backend) -> None:
    store = backend.store
    store.close()
    store.close()
    with pytest.raises(backend.closed_error):
        store.get("video_0001")
    with pytest.raises(backend.closed_error):
        store.create(make_job(1))


def test_concurrent_saves_lose_nothing(store: JobStore) -> None:
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
            store.list(limit=5)  # interleave reads on the same connection / client

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
    assert store.count_by_status()[JobStatus.queued] == threads_n


@pytest.mark.parametrize("own_stores", [False, True], ids=["one_store", "own_stores"])
def test_concurrent_compare_and_set_has_one_winner(backend: Backend, own_stores: bool) -> None:
    # Many threads race to move one queued job forward; exactly one may win. They share one store,
    # or each has its own (connection / client), as separate processes would.
    store = backend.store
    store.create(make_job(1))
    racers = 8
    start = threading.Barrier(racers)
    stores = [backend.open_another() if own_stores else store for _ in range(racers)]

    def racer(i: int) -> bool:
        start.wait(timeout=30)
        return stores[i].save(
            make_job(1, status=JobStatus.in_progress, attempts=i), expect={JobStatus.queued}
        )

    with ThreadPoolExecutor(max_workers=racers) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(racer, i) for i in range(racers)]]
    assert sorted(results) == [False] * (racers - 1) + [True]
    assert store.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
    winner = store.get("video_0001")
    assert winner is not None and results[winner.attempts]
