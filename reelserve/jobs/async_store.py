"""A ``JobStore`` for the event loop: each call runs on the store's own thread, so the loop never
waits on SQLite's fsync or a Redis round trip (and a slow disk or network stalls no other request).

One thread, so calls run one at a time in the order they were made: causal order is what it was on
the loop. A job handed to ``create`` or ``save`` is copied first, so the caller (or another
coroutine) may change it while the write is under way without changing what is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from reelserve.jobs.base import JobStore
from reelserve.schemas import Job, JobStatus

T = TypeVar("T")


class AsyncJobStore:
    """``JobStore``'s calls as coroutines, over a ``JobStore`` (``sync``, still usable from other
    threads: both stores are thread-safe). ``close`` stops the thread, not the store."""

    def __init__(self, store: JobStore, name: str = "reelserve-store") -> None:
        self.sync = store
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def create(self, job: Job, durable: bool = True) -> None:
        await self._run(self.sync.create, job.model_copy(deep=True), durable)

    async def make_durable(self) -> None:
        await self._run(self.sync.make_durable)

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self.sync.get, job_id)

    async def list(self, limit: int, after: str | None = None) -> list[Job]:
        return await self._run(self.sync.list, limit, after)

    async def list_for_tenant(self, tenant: str, limit: int, after: str | None = None) -> list[Job]:
        return await self._run(self.sync.list_for_tenant, tenant, limit, after)

    async def save(self, job: Job, expect: Collection[JobStatus] | None = None) -> bool:
        return await self._run(self.sync.save, job.model_copy(deep=True), expect)

    async def delete(self, job_id: str) -> bool:
        return await self._run(self.sync.delete, job_id)

    async def unfinished(self) -> list[Job]:
        return await self._run(self.sync.unfinished)

    async def transitions(self, job_id: str) -> list[tuple[str | None, str]]:
        return await self._run(self.sync.transitions, job_id)

    def close(self) -> None:
        """Wait for the calls under way, then stop the thread."""
        self._thread.shutdown(wait=True)
