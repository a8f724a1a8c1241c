"""SqliteJobStore: what only SQLite has. The JobStore contract (reopen, other connections and thread
safety included) is in test_store_contract.py."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelserve.jobs import SqliteJobStore
from reelserve.schemas import JobStatus

from test_store_contract import make_job


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(db_path)
    yield s
    s.close()


def test_database_is_wal_with_full_sync(store: SqliteJobStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    # synchronous is per connection: ask the store's own (2 == FULL).
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def _sync_mode_of_each_commit(store: SqliteJobStore) -> list[str]:
    """Record, for each COMMIT on the store's connection, the ``synchronous`` level it ran under."""
    level, commits = "FULL", []

    def trace(statement: str) -> None:
        nonlocal level
        if statement.startswith("PRAGMA synchronous = "):
            level = statement.rsplit(" ", 1)[1]
        elif statement == "COMMIT":
            commits.append(level)

    store._conn.set_trace_callback(trace)
    return commits


def test_a_write_that_leaves_the_job_unfinished_does_not_wait_for_the_disk(store: SqliteJobStore) -> None:
    # Recovery re-runs queued and in-progress jobs alike, so only a new job and a final state are
    # promises that must be on disk before the call returns.
    commits = _sync_mode_of_each_commit(store)
    job = make_job()
    store.create(job)
    job.status = JobStatus.in_progress
    assert store.save(job, expect={JobStatus.queued})  # a claim
    job.progress = 50
    assert store.save(job, expect={JobStatus.in_progress})  # progress
    assert not store.save(job, expect={JobStatus.queued})  # refused: nothing written
    job.status = JobStatus.completed
    assert store.save(job, expect={JobStatus.in_progress})
    assert commits == ["FULL", "NORMAL", "NORMAL", "NORMAL", "FULL"]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again after each
    assert store.get(job.id).status is JobStatus.completed


def test_a_job_nobody_holds_the_id_of_is_inserted_without_waiting_for_the_disk(store: SqliteJobStore) -> None:
    # A client waiting for the job's final state learns its id only then (or after make_durable).
    commits = _sync_mode_of_each_commit(store)
    store.create(make_job(1), durable=False)
    store.create(make_job(2))
    store.create(make_job(3, status=JobStatus.completed, progress=100), durable=False)  # a cache hit: final
    assert commits == ["NORMAL", "FULL", "FULL"]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_make_durable_syncs_only_when_a_commit_since_the_last_durable_one_did_not(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store.create(make_job(1))
    store.make_durable()
    assert synced == []  # the FULL commit synced it already
    store.create(make_job(2), durable=False)
    store.list(limit=10)  # a read commits nothing
    store.make_durable()
    store.make_durable()
    assert len(synced) == 1  # once: the second had nothing new to sync
    store.create(make_job(3), durable=False)
    store.create(make_job(4))  # a durable commit takes the earlier one to disk too
    store.make_durable()
    assert len(synced) == 1


_TRY_TO_WRITE = """
import sqlite3, sys
try:
    sqlite3.connect(sys.argv[1], timeout=0).execute("BEGIN IMMEDIATE")
    print("wrote")
except sqlite3.OperationalError as exc:
    print("locked" if "locked" in str(exc) else exc)
"""


def test_make_durable_syncs_the_wal_that_holds_the_commits_so_far(
    store: SqliteJobStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy, not a stand-in: the real fsync runs; the test records which file it was given.
    store._conn.execute("PRAGMA wal_autocheckpoint = 0")  # so the commit is still in the WAL
    store.create(make_job(1), durable=False)
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    # Closing a descriptor drops every POSIX lock this process holds on that file: SQLite must hold
    # none on the WAL. A writer in this process holds the write lock across the call.
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(os, "fsync", spy)
    store.make_durable()
    monkeypatch.undo()
    # Another process: within one, SQLite settles its connections' locks itself, not with fcntl.
    other = subprocess.run([sys.executable, "-c", _TRY_TO_WRITE, str(db_path)], capture_output=True, text=True)
    assert other.stdout.strip() == "locked", other.stderr
    writer.execute("ROLLBACK")
    writer.close()
    wal = Path(f"{db_path}-wal")
    assert synced == [wal.stat().st_ino]
    frames = (wal.stat().st_size - 32) // (4096 + 24)  # header, then (frame header + page) each
    assert frames >= 1  # the insert is in the file that was synced


def test_stores_opened_at_once_on_a_new_database_all_open(tmp_path: Path) -> None:
    # Two servers started together on one data directory: each switches the new file to WAL.
    import threading

    for round_number in range(10):
        path = tmp_path / f"jobs-{round_number}.sqlite3"
        start, errors, stores = threading.Barrier(4), [], []

        def open_store() -> None:
            start.wait(10)
            try:
                stores.append(SqliteJobStore(path))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and len(stores) == 4
        for store in stores:
            store.close()
