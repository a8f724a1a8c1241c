"""The embedded broker: an in-process FIFO that can hand out the oldest job of a given batch key.

Nothing here is durable on purpose: the job store is the record, and a restart rebuilds this
queue from ``JobStore.unfinished()``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class LocalBroker:
    """Implements ``reelserve.jobs.base.Broker``. Use from one event loop."""

    def __init__(self) -> None:
        self._queued: OrderedDict[str, str] = OrderedDict()  # job id -> batch key, oldest first
        self._changed = asyncio.Condition()

    async def put(self, job_id: str, batch_key: str) -> None:
        async with self._changed:
            self._queued[job_id] = batch_key
            self._changed.notify_all()

    async def take(
        self, batch_key: str | None = None, timeout: float | None = None
    ) -> tuple[str, str] | None:
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while (job_id := self._first(batch_key)) is None:
                        await self._changed.wait()
            except TimeoutError:
                return None
            return job_id, self._queued.pop(job_id)

    def _first(self, batch_key: str | None) -> str | None:
        for job_id, key in self._queued.items():
            if batch_key is None or key == batch_key:
                return job_id
        return None

    def discard(self, job_id: str) -> bool:
        return self._queued.pop(job_id, None) is not None

    def position(self, job_id: str) -> int | None:
        for index, queued_id in enumerate(self._queued):
            if queued_id == job_id:
                return index
        return None

    def depth(self) -> int:
        return len(self._queued)
