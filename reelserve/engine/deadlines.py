"""Fails queued jobs whose deadline has passed, at that moment, so they never run and their callers
hear at once, not when the queue finally reaches them."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from reelserve.cancellation import reraise_if_cancelled

log = logging.getLogger(__name__)

Expire = Callable[[str], Awaitable[None]]


class DeadlineWatch:
    """
    :param expire: called with each job id whose deadline passed while it was watched; it decides
        whether the job was still queued (a claimed job is simply left alone).
    """

    def __init__(self, expire: Expire, clock: Callable[[], float] = time.time) -> None:
        self._expire = expire
        self._clock = clock
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    def watch(self, job_id: str, deadline_at: float) -> None:
        self._deadlines[job_id] = deadline_at
        heapq.heappush(self._heap, (deadline_at, job_id))
        if self._heap[0][1] == job_id:
            self._changed.set()  # a new earliest deadline: the loop's sleep is too long now

    def forget(self, job_id: str) -> None:
        """The job left the queue; its heap entry is dropped lazily, and the heap rebuilt when mostly stale."""
        self._deadlines.pop(job_id, None)
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._deadlines):
            self._heap = [(at, job_id) for job_id, at in self._deadlines.items()]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._deadlines)

    async def run(self) -> None:
        while True:
            self._changed.clear()
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                at, job_id = heapq.heappop(self._heap)
                if self._deadlines.get(job_id) == at:
                    del self._deadlines[job_id]
                    try:
                        await self._expire(job_id)
                    except Exception:  # one bad job must not stop deadlines for every other
                        reraise_if_cancelled()
                        log.exception("expiring %s failed", job_id)
            timeout = self._heap[0][0] - self._clock() if self._heap else None
            try:
                async with asyncio.timeout(max(timeout, 0.0) if timeout is not None else None):
                    await self._changed.wait()
            except TimeoutError:
                pass
