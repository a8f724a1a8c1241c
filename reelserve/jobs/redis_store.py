"""``JobStore`` on Redis: the distributed mode's job records, shared by every API and engine process.

Same contract as ``SqliteJobStore``. Each job is a hash holding its JSON plus the fields the scripts
need; sorted sets scored by an INCR counter give insertion order for paging and "oldest first".
Every write is one Lua script (``redis_scripts``), so the compare-and-set, the transition log and the
indexes change together or not at all. Key layout: ``reelserve.redis_names.RedisKeys``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import redis
from redis.commands.core import Script

from reelserve.jobs.redis_scripts import (
    AGAIN,
    COUNT_JOBS_LUA,
    CREATE_JOB_LUA,
    DELETE_JOB_LUA,
    LIST_JOBS_LUA,
    SAVE_JOB_LUA,
    UNFINISHED_JOBS_LUA,
    UNKNOWN_CURSOR,
)
from reelserve.redis_names import DEFAULT_NAMESPACE, STATUS_ORDER, RedisKeys
from reelserve.schemas import Job, JobStatus

DEFAULT_RETENTION_S = 7 * 86400


class RedisJobStore:
    """A ``JobStore`` in Redis.

    :param client: a synchronous ``redis.Redis`` (either ``decode_responses``). The store borrows it:
        ``close()`` leaves it open for its owner to close. ``from_url`` makes a store that owns its client.
    :param namespace: prefix of every key (see ``RedisKeys``); stores with different namespaces on one
        Redis never see each other's jobs.
    :param retention_s: once a job reaches a final status, its record and transition log expire this
        many seconds later (the job then vanishes from every listing and count); None keeps them forever.

    Every method is one Redis command or one script, answered by Redis before it returns: a write is
    applied, atomically, and visible to every other client at once. Whether it survives a Redis
    restart is Redis's persistence setting (``appendonly yes`` with ``appendfsync always`` matches the
    SQLite store). Safe to share between threads (the client's pool hands each call a connection).
    Expired jobs are dropped from the indexes lazily, by the reads that would otherwise see them.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str = DEFAULT_NAMESPACE,
        retention_s: float | None = DEFAULT_RETENTION_S,
        *,
        owns_client: bool = False,
    ) -> None:
        if retention_s is not None and not retention_s >= 0.001:
            raise ValueError(f"retention_s must be at least 0.001 (or None: keep forever); got {retention_s}")
        self.keys = RedisKeys(namespace)
        self.retention_s = retention_s
        self._retention_ms = 0 if retention_s is None else round(retention_s * 1000)
        self._client = client
        self._owns_client = owns_client
        self._closed = False
        self._index = self.keys.job_index()
        self._prefixes = [self.keys.job_prefix(), self.keys.tenant_jobs_prefix()]
        self._create = client.register_script(CREATE_JOB_LUA)
        self._save = client.register_script(SAVE_JOB_LUA)
        self._delete = client.register_script(DELETE_JOB_LUA)
        self._list = client.register_script(LIST_JOBS_LUA)
        self._unfinished = client.register_script(UNFINISHED_JOBS_LUA)
        self._count = client.register_script(COUNT_JOBS_LUA)

    @classmethod
    def from_url(
        cls, url: str, namespace: str = DEFAULT_NAMESPACE, retention_s: float | None = DEFAULT_RETENTION_S
    ) -> RedisJobStore:
        """A store on a client of its own for ``url`` (``redis://host:port/db``); ``close()`` closes it."""
        return cls(redis.Redis.from_url(url), namespace, retention_s, owns_client=True)

    def create(self, job: Job, durable: bool = True) -> None:
        """Insert ``job`` and its first transition ``(None, job.status)``. Every write is as durable as
        the server's persistence makes it, so ``durable`` changes nothing.

        Raises ``ValueError`` if a job with the same id exists.
        """
        if not self._run(self._create, self._job_keys(job.id), self._job_args(job)):
            raise ValueError(f"job {job.id} already exists")

    def get(self, job_id: str) -> Job | None:
        data = self._live().hget(self.keys.job(job_id), "data")
        return Job.model_validate_json(data) if data is not None else None

    def list(self, limit: int, after: str | None = None) -> list[Job]:
        """Up to ``limit`` jobs, newest first (by insertion, not ``created_at``).

        ``after`` is a job id from a previous page: only jobs created before it are returned.
        Raises ``KeyError`` if no job has id ``after``, and ``ValueError`` if ``limit < 0``.
        """
        return self._page(self.keys.jobs_by_insertion(), limit, after)

    def list_for_tenant(self, tenant: str, limit: int, after: str | None = None) -> list[Job]:
        """``list``, of the jobs whose ``tenant`` is ``tenant`` only.

        Raises ``KeyError`` if ``after`` is not a job of this tenant, ``ValueError`` if ``limit < 0``.
        """
        return self._page(self.keys.tenant_jobs(tenant), limit, after)

    def save(self, job: Job, expect: Collection[JobStatus] | None = None) -> bool:
        """Write ``job`` back; with ``expect``, only if the stored status is one of those.

        Returns False, writing nothing, when the job is gone (or expired) or its stored status is not
        in ``expect``. The check and the write are one script, so of a cancel and a completion racing
        on the same job exactly one wins, whichever process they run in. A status change is logged.
        """
        guard = ["*"] if expect is None else ["=", *(JobStatus(s).value for s in expect)]
        return bool(self._run(self._save, self._job_keys(job.id), [*self._job_args(job), *guard]))

    def delete(self, job_id: str) -> bool:
        """Remove the job and its transition log; False if there was no such job."""
        return bool(self._run(self._delete, self._job_keys(job_id), [*self._prefixes, job_id]))

    def unfinished(self) -> list[Job]:
        """Jobs queued or in progress, oldest first: what a restart must run again."""
        rows = self._run(self._unfinished, self._index, self._prefixes)
        return [Job.model_validate_json(data) for data in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs have each status; every ``JobStatus`` is a key, 0 when there are none."""
        reply = self._read(self._count, self._index, self._prefixes)
        return {status: int(n) for status, n in zip(STATUS_ORDER, reply[1:], strict=True)}

    def transitions(self, job_id: str) -> list[tuple[str | None, str]]:
        """The job's status changes in order, as ``(from, to)``; the first is ``(None, 'queued')``.

        Empty for an unknown, deleted or expired job.
        """
        entries = [json.loads(raw) for raw in self._live().lrange(self.keys.transitions(job_id), 0, -1)]
        return [(entry["from"], entry["to"]) for entry in entries]

    def make_durable(self) -> None:
        """Nothing to do: each write was as durable as Redis' persistence when it returned."""

    def close(self) -> None:
        """Stop using Redis. Idempotent; any other call afterwards raises ``RuntimeError``.

        Closes the client only if this store made it (``from_url``); a borrowed client stays open.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self._client.close()

    def _page(self, zset: str, limit: int, after: str | None) -> list[Job]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0; got {limit}")
        cursor = [] if after is None else [after]
        reply = self._read(self._list, [*self._index, zset], [*self._prefixes, limit, *cursor])
        if int(reply[0]) == UNKNOWN_CURSOR:
            raise KeyError(after)
        return [Job.model_validate_json(data) for data in reply[1:]]

    def _read(self, script: Script, keys: list[str], args: list[Any]) -> list[Any]:
        """Run a reading script, again while it answers AGAIN: it forgets expired jobs a batch per call,
        so that a long backlog never blocks Redis in one go."""
        while True:
            reply = self._run(script, keys, args)
            if int(reply[0]) != AGAIN:
                return reply

    def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        self._live()
        return script(keys=keys, args=args)

    def _live(self) -> redis.Redis:
        if self._closed:
            raise RuntimeError("the job store is closed")
        return self._client

    def _job_keys(self, job_id: str) -> list[str]:
        return [*self._index, self.keys.job(job_id), self.keys.transitions(job_id)]

    def _job_args(self, job: Job) -> list[Any]:
        return [
            *self._prefixes,
            job.id,
            job.status.value,
            job.model_dump_json(),
            job.tenant or "",
            self._retention_ms,
        ]
