"""In-process fan-out of job events to whoever listens (SSE streams, sync waiters)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from reelserve.jobs.step_followers import StepFollowers
from reelserve.schemas import EventType, Job, JobEvent


class Events(Protocol):
    """Where job events go: this process only (``EventBus``), or every process (``RedisEventBus``)."""

    def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str, progress: bool = True) -> AbstractAsyncContextManager[asyncio.Queue[JobEvent]]:
        """Every event of ``job_id`` published from when this is entered until it is left; without
        ``progress``, all but the per-step ``progress`` events (a waiter for the final status)."""

    def wants_progress(self, job_id: str) -> bool:
        """Might anyone take ``job_id``'s step events? Safe to call from any thread: the pipeline
        thread asks before it builds a step's event, so a step nobody follows wakes no event loop."""

    def listening_jobs(self) -> list[str]:
        """Jobs someone in this process listens to."""


class EventBus:
    """Publish/subscribe by job id. Use from one event loop; slow listeners never block the engine
    because each subscription is an unbounded queue that only lives while someone listens."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)
        self._steps = StepFollowers()

    def publish(self, event: JobEvent) -> None:
        for queue in self._listeners.get(event.job_id, ()):
            if self._steps.takes(queue, event):
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, job_id: str, progress: bool = True) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._listeners[job_id].add(queue)
        try:
            with self._steps.following(job_id, queue, progress):
                yield queue
        finally:
            self._listeners[job_id].discard(queue)
            if not self._listeners[job_id]:
                del self._listeners[job_id]

    def wants_progress(self, job_id: str) -> bool:
        return self._steps.wanted(job_id)

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
    """A job's status; a final one carries the job (``JobEvent.job``) for waiters in this process."""
    event = JobEvent(
        job_id=job.id,
        type=EventType.status,
        status=job.status,
        progress=job.progress,
        total_steps=job.params.steps_run,
        error=job.error,
        estimated_completion_at=None if job.status.final else job.estimated_completion_at,
    )
    return event.with_job(job) if job.status.final else event
