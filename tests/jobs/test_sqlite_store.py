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
