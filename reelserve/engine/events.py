"""In-process fan-out of job events to whoever listens (SSE streams, sync waiters)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from reelserve.schemas import EventType, Job, JobEvent


class Events(Protocol):
    """Where job events go: this process only (``EventBus``), or every process (``RedisEventBus``)."""

    def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[asyncio.Queue[JobEvent]]:
        """Every event of ``job_id`` published from when this is entered until it is left."""

    def listening_jobs(self) -> list[str]:
        """Jobs someone in this process listens to."""


class EventBus:
    """Publish/subscribe by job id. Use from one event loop; slow listeners never block the engine
    because each subscription is an unbounded queue that only lives while someone listens."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)

    def publish(self, event: JobEvent) -> None:
        for queue in self._listeners.get(event.job_id, ()):
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._listeners[job_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[job_id].discard(queue)
            if not self._listeners[job_id]:
                del self._listeners[job_id]

    def listening_jobs(self) -> list[str]:
        return list(self._listeners)


def queued_event(job: Job, position: int | None) -> JobEvent:
    return JobEvent(
        job_id=job.id,
        type=EventType.queued,
        status=job.status,
        queue_position=position,
        estimated_completion_at=job.estimated_completion_at,
    )


def status_event(job: Job) -> JobEvent:
    return JobEvent(
        job_id=job.id,
        type=EventType.status,
        status=job.status,
        progress=job.progress,
        total_steps=job.params.num_inference_steps,
        error=job.error,
        estimated_completion_at=None if job.status.final else job.estimated_completion_at,
    )
