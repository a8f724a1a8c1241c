"""SqliteJobStore: what only SQLite has. The JobStore contract (reopen, other connections and thread
safety included) is in test_store_contract.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelserve.jobs import SqliteJobStore


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
