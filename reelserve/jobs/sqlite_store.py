"""``JobStore`` on one SQLite file: the embedded mode's durable job records.

Each job is one row holding its JSON (``Job.model_dump_json()``) plus the columns queries need.
Every status change is also appended to ``job_transitions``, which is what an operator reads
to see how a job got where it is.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from reelserve.schemas import UNFINISHED_STATUSES, Job, JobStatus

_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,  -- insertion order: what paging and 'oldest first' use
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        data TEXT NOT NULL            -- Job.model_dump_json()
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)",
    # A tenant's own listing (the playground's history), without a column (and so a migration) of its own.
    "CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (json_extract(data, '$.tenant'), seq)",
    """CREATE TABLE IF NOT EXISTS job_transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        from_status TEXT,             -- NULL for the job's first status
        to_status TEXT NOT NULL,
        at REAL NOT NULL              -- unix seconds
    )""",
    "CREATE INDEX IF NOT EXISTS job_transitions_job ON job_transitions (job_id, seq)",
)


class SqliteJobStore:
    """A ``JobStore`` in the SQLite database at ``path`` (created, with its directory, if missing).

    A write that creates a job or makes it final is committed with ``synchronous=FULL`` in WAL
    mode, so it is on disk when the method returns; one that leaves the job unfinished (a claim,
    progress, a re-queue) with ``NORMAL``: see ``save``. Safe to call from several threads: one
    connection is shared under a lock.
    Opening an existing file keeps its jobs (that is how a restart finds unfinished work).
    Raises ``RuntimeError`` if the file was written by a newer schema, or cannot use WAL.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit mode (isolation_level=None): transactions are begun explicitly below, so
        # each one is exactly as wide as the code says.
        self._conn = sqlite3.connect(
            self.path,
            check_same_thread=False,  # the event loop and the engine's worker thread share it
            isolation_level=None,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        self._undurable = False  # a commit since the last durable one did not wait for the disk
        try:
            self._init_db()
        except BaseException:
            self._conn.close()
            raise
        # The file SQLite itself opened (an absolute path, as it resolved it), for make_durable.
        self._wal_path = self._conn.execute("PRAGMA database_list").fetchone()[2] + "-wal"

    def _switch_to_wal(self) -> str:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the new database: two
        servers starting on one data directory at once both switch it, and SQLite answers the loser
        "database is locked" at once, without consulting the busy timeout (seen in CI)."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # a back-off between attempts, bounded by the busy timeout

    def _init_db(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = self._switch_to_wal()
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")  # a job is on disk before the API answers 2xx
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: job database schema v{version} is newer than this reelserve "
                    f"(v{_SCHEMA_VERSION})"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE", durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one transaction; commit on success, roll back on any exception.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a read-check-write sequence
        cannot be interleaved with another writer (another process included). Not ``durable``:
        committed without waiting for the disk (``synchronous=NORMAL``); a process crash keeps it,
        a power cut may lose it, and only it and the other such commits after the last durable one
        (the WAL is a log: the next durable commit takes them to disk too).
        """
        with self._lock, self._synchronous("FULL" if durable else "NORMAL"):
            changes = self._conn.total_changes
            self._conn.execute(begin)
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # a failed COMMIT may have ended it already
                    self._conn.execute("ROLLBACK")
                raise
            if self._conn.total_changes != changes:  # it wrote; a durable one synced every commit before it
                self._undurable = not durable

    @contextmanager
    def _synchronous(self, level: str) -> Iterator[None]:
        """The connection's commits under ``level`` inside, ``FULL`` (its own) again after."""
        if level == "FULL":
            yield
            return
        self._conn.execute(f"PRAGMA synchronous = {level}")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous = FULL")

    def create(self, job: Job, durable: bool = True) -> None:
        """Insert ``job`` and its first transition ``(None, job.status)``.

        Not ``durable``: committed without waiting for the disk (about 0.5 ms of fsync a request
        here; docs/benchmarks.md), for a job whose id nobody holds yet, until ``make_durable``.
        A final job (a cache hit) is always durable. Raises ``ValueError`` if the id exists.
        """
        now = time.time()
        with self._transaction(durable=durable or job.status.final) as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                raise ValueError(f"job {job.id} already exists")
            conn.execute(
                "INSERT INTO jobs (id, seq, status, created_at, data)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, ?)",
                (job.id, job.status.value, job.created_at, job.model_dump_json()),
            )
            _append_transition(conn, job.id, None, job.status, now)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def list(self, limit: int, after: str | None = None) -> list[Job]:
        """Up to ``limit`` jobs, newest first.

        ``after`` is a job id from a previous page: only jobs created before it are returned.
        Raises ``KeyError`` if no job has id ``after``, and ``ValueError`` if ``limit < 0``.
        """
        return self._page(limit, after, None)

    def list_for_tenant(self, tenant: str, limit: int, after: str | None = None) -> list[Job]:
        """``list``, of the jobs whose ``tenant`` is ``tenant`` only.

        Raises ``KeyError`` if ``after`` is not a job of this tenant, ``ValueError`` if ``limit < 0``.
        """
        return self._page(limit, after, tenant)

    def _page(self, limit: int, after: str | None, tenant: str | None) -> list[Job]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0; got {limit}")
        where, args = ("json_extract(data, '$.tenant') = ?", [tenant]) if tenant is not None else ("1", [])
        # One read transaction, so the cursor lookup and the page see the same snapshot.
        with self._transaction("BEGIN") as conn:
            if after is not None:
                cursor = conn.execute(f"SELECT seq FROM jobs WHERE id = ? AND {where}", (after, *args)).fetchone()
                if cursor is None:
                    raise KeyError(after)
                where, args = f"{where} AND seq < ?", [*args, cursor[0]]
            rows = conn.execute(
                f"SELECT data FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [Job.model_validate_json(data) for (data,) in rows]

    def save(self, job: Job, expect: Collection[JobStatus] | None = None) -> bool:
        """Write ``job`` back; with ``expect``, only if the stored status is one of those.

        Returns False, writing nothing, when the job is gone or its stored status is not in
        ``expect``. The check and the write are one transaction, so of a cancel and a
        completion racing on the same job exactly one wins. A status change is logged.

        A save that leaves the job unfinished is not waited on to reach the disk: a restart runs a
        queued and an in-progress job alike, so a claim or progress lost to a power cut changes
        nothing but the attempt count (about 0.3 ms of fsync a claim; docs/benchmarks.md).
        """
        now = time.time()
        with self._transaction(durable=job.status.final) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is None:
                return False
            stored = JobStatus(row[0])
            if expect is not None and stored not in expect:
                return False
            conn.execute(
                "UPDATE jobs SET status = ?, created_at = ?, data = ? WHERE id = ?",
                (job.status.value, job.created_at, job.model_dump_json(), job.id),
            )
            if stored != job.status:
                _append_transition(conn, job.id, stored, job.status, now)
        return True

    def delete(self, job_id: str) -> bool:
        """Remove the job and its transition log; False if there was no such job."""
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
            conn.execute("DELETE FROM job_transitions WHERE job_id = ?", (job_id,))
        return deleted > 0

    def unfinished(self) -> list[Job]:
        """Jobs queued or in progress, oldest first: what a restart must run again."""
        statuses = sorted(s.value for s in UNFINISHED_STATUSES)
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT data FROM jobs WHERE status IN ({marks}) ORDER BY seq ASC", statuses
            ).fetchall()
        return [Job.model_validate_json(data) for (data,) in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs have each status; every ``JobStatus`` is a key, 0 when there are none."""
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        counts = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            counts[JobStatus(status)] = count
        return counts

    def transitions(self, job_id: str) -> list[tuple[str | None, str]]:
        """The job's status changes in order, as ``(from, to)``; the first is ``(None, 'queued')``.

        Empty for an unknown (or deleted) job.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT from_status, to_status FROM job_transitions WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
        return [(from_status, to_status) for from_status, to_status in rows]

    def make_durable(self) -> None:
        """What SQLite's ``FULL`` commit does, for every commit so far: fsync the WAL. A commit is in
        the WAL until a checkpoint has copied it into the database file and synced that file (SQLite
        resets the WAL only then). Closing this descriptor drops no lock of SQLite's: it locks the
        database and the ``-shm`` file, never the WAL."""
        with self._lock:
            if not self._undurable:
                return
            fd = os.open(self._wal_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._undurable = False

    def close(self) -> None:
        """Close the database. Idempotent; any other call afterwards raises ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._conn.close()


def _append_transition(
    conn: sqlite3.Connection, job_id: str, from_status: JobStatus | None, to_status: JobStatus, at: float
) -> None:
    conn.execute(
        "INSERT INTO job_transitions (job_id, from_status, to_status, at) VALUES (?, ?, ?, ?)",
        (job_id, from_status.value if from_status is not None else None, to_status.value, at),
    )
