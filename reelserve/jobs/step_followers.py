"""Which local listeners of job events take the per-step ``progress`` events: both event buses
(in-process and Redis) keep one, so a waiter for a final status is not woken at every step, and a
step nobody follows wakes no event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from reelserve.schemas import EventType, JobEvent


_STEP_EVENTS = (EventType.progress, EventType.preview)


class StepFollowers:
    """Which local listeners take per-step ``progress`` events, counted per job so that the pipeline
    thread's question (``wanted``) is one dict lookup, atomic under the GIL, with no lock."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[JobEvent]] = set()
        self._per_job: dict[str, int] = {}

    @contextmanager
    def following(self, job_id: str, queue: asyncio.Queue[JobEvent], progress: bool) -> Iterator[None]:
        """``queue`` takes ``job_id``'s step events while inside, if ``progress``."""
        if not progress:
            yield
            return
        self._queues.add(queue)
        self._per_job[job_id] = self._per_job.get(job_id, 0) + 1
        try:
            yield
        finally:
            self._queues.discard(queue)
            if self._per_job[job_id] == 1:
                del self._per_job[job_id]
            else:
                self._per_job[job_id] -= 1

    def takes(self, queue: asyncio.Queue[JobEvent], event: JobEvent) -> bool:
        """Does ``queue`` get ``event``? Every event but a step's (progress, preview), which only its followers get."""
        return event.type not in _STEP_EVENTS or queue in self._queues

    def wanted(self, job_id: str) -> bool:
        return job_id in self._per_job
