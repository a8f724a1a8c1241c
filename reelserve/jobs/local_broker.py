"""The embedded broker: in-process priority queues, one FIFO per tier level, that can hand out the
oldest job of a given batch key (``WaitingJobs``, the batching policy's queue).

Nothing here is durable on purpose: the job store is the record, and a restart rebuilds these
queues from ``JobStore.unfinished()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from reelserve.jobs.base import Preempted
from reelserve.jobs.waiting import WaitingJobs


@dataclass(frozen=True)
class _Job:
    batch_key: str
    level: int


class LocalBroker:
    """Implements ``reelserve.jobs.base.Broker``. Use from one event loop."""

    def __init__(self) -> None:
        self._waiting: WaitingJobs[_Job] = WaitingJobs()
        self._changed = asyncio.Condition()

    async def put(self, job_id: str, batch_key: str, level: int = 0) -> None:
        async with self._changed:
            self._waiting.append(job_id, _Job(batch_key, level))
            self._changed.notify_all()

    async def take(
        self,
        batch_key: str | None = None,
        timeout: float | None = None,
        *,
        level: int | None = None,
        preempt_below: int | None = None,
        urgent_first: bool = False,
        up_to: int | None = None,
    ) -> tuple[str, str] | None:
        def urgent() -> bool:
            return preempt_below is not None and self._waiting.urgent(preempt_below, batch_key)

        def first() -> str | None:
            return self._waiting.first(batch_key, level, up_to=up_to)

        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while (urgent_first and urgent()) or (job_id := first()) is None:
                        if urgent():
                            raise Preempted
                        await self._changed.wait()
            except TimeoutError:
                return None
            return job_id, self._waiting.pop(job_id).batch_key

    async def requeue(self, job_ids: list[str], batch_key: str, levels: dict[str, int]) -> None:
        """Put taken jobs back where they were: ahead of everything that arrived after them."""
        async with self._changed:
            self._waiting.push_front((job_id, _Job(batch_key, levels[job_id])) for job_id in job_ids)
            self._changed.notify_all()

    async def discard(self, job_id: str) -> bool:
        return self._waiting.remove(job_id)

    async def position(self, job_id: str) -> int | None:
        return self._waiting.position(job_id)

    async def depth(self) -> int:
        return len(self._waiting)

    async def depth_by_level(self) -> dict[int, int]:
        return self._waiting.depth_by_level()

    # No leases: nothing outlives this process, so there is nothing to keep, reclaim or hand back.

    async def ack(self, job_id: str) -> bool:
        return False

    async def heartbeat(self, job_ids: Sequence[str]) -> list[str]:
        return []

    async def reclaim(self) -> tuple[list[str], list[str]]:
        return [], []

    async def release(self) -> int:
        return 0
