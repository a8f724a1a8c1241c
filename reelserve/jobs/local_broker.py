"""The embedded broker: in-process priority queues, one FIFO per tier level, that can hand out the
oldest job of a given batch key.

Nothing here is durable on purpose: the job store is the record, and a restart rebuilds these
queues from ``JobStore.unfinished()``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Sequence

from reelserve.jobs.base import Preempted


class LocalBroker:
    """Implements ``reelserve.jobs.base.Broker``. Use from one event loop."""

    def __init__(self) -> None:
        # level -> job id -> (arrival sequence, batch key), oldest first
        self._levels: dict[int, OrderedDict[str, tuple[int, str]]] = {}
        self._level_of: dict[str, int] = {}
        self._sequence = itertools.count()
        self._changed = asyncio.Condition()

    async def put(self, job_id: str, batch_key: str, level: int = 0) -> None:
        async with self._changed:
            self._levels.setdefault(level, OrderedDict())[job_id] = (next(self._sequence), batch_key)
            self._level_of[job_id] = level
            self._changed.notify_all()

    async def take(
        self,
        batch_key: str | None = None,
        timeout: float | None = None,
        *,
        level: int | None = None,
        preempt_below: int | None = None,
    ) -> tuple[str, str] | None:
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while (job_id := self._first(batch_key, level)) is None:
                        if preempt_below is not None and self._urgent(preempt_below, batch_key):
                            raise Preempted
                        await self._changed.wait()
            except TimeoutError:
                return None
            return job_id, self._pop(job_id)[1]

    async def requeue(self, job_ids: list[str], batch_key: str, levels: dict[str, int]) -> None:
        """Put taken jobs back where they were: ahead of everything that arrived after them."""
        async with self._changed:
            for job_id in reversed(job_ids):  # each goes to the front, so the first ends first
                queue = self._levels.setdefault(levels[job_id], OrderedDict())
                queue[job_id] = (-1, batch_key)
                queue.move_to_end(job_id, last=False)
                self._level_of[job_id] = levels[job_id]
            self._changed.notify_all()

    def _first(self, batch_key: str | None, level: int | None) -> str | None:
        """Oldest job of the most urgent level (of ``level`` first, when given), of ``batch_key`` if given."""
        order = sorted(self._levels)
        if level is not None:
            order = [level, *(lvl for lvl in order if lvl != level)]
        for lvl in order:
            for job_id, (_, key) in self._levels.get(lvl, {}).items():
                if batch_key is None or key == batch_key:
                    return job_id
        return None

    def _urgent(self, below: int, batch_key: str | None) -> bool:
        """Is a job of a more urgent level than ``below`` waiting that could not join ``batch_key``?"""
        return any(
            key != batch_key for lvl, queue in self._levels.items() if lvl < below for _, key in queue.values()
        )

    def _pop(self, job_id: str) -> tuple[int, str]:
        level = self._level_of.pop(job_id)
        entry = self._levels[level].pop(job_id)
        if not self._levels[level]:
            del self._levels[level]
        return entry

    async def discard(self, job_id: str) -> bool:
        if job_id not in self._level_of:
            return False
        self._pop(job_id)
        return True

    async def position(self, job_id: str) -> int | None:
        level = self._level_of.get(job_id)
        if level is None:
            return None
        ahead = sum(len(queue) for lvl, queue in self._levels.items() if lvl < level)
        for index, queued_id in enumerate(self._levels[level]):
            if queued_id == job_id:
                return ahead + index
        return None  # unreachable: _level_of and _levels agree

    async def depth(self) -> int:
        return len(self._level_of)

    async def depth_by_level(self) -> dict[int, int]:
        return {level: len(queue) for level, queue in self._levels.items()}

    # No leases: nothing outlives this process, so there is nothing to keep, reclaim or hand back.

    async def ack(self, job_id: str) -> bool:
        return False

    async def heartbeat(self, job_ids: Sequence[str]) -> list[str]:
        return []

    async def reclaim(self) -> tuple[list[str], list[str]]:
        return [], []

    async def release(self) -> int:
        return 0
