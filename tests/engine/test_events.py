"""EventBus: fan-out by job, and step events only to those who follow steps."""

from __future__ import annotations

import asyncio

from reelserve.engine.events import EventBus
from reelserve.schemas import EventType, JobEvent, JobStatus


def step(job_id: str, number: int) -> JobEvent:
    return JobEvent(job_id=job_id, type=EventType.progress, status=JobStatus.in_progress, step=number, at=1.0)


def final(job_id: str) -> JobEvent:
    return JobEvent(job_id=job_id, type=EventType.status, status=JobStatus.completed, at=1.0)


def drained(queue: asyncio.Queue[JobEvent]) -> list[JobEvent]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_a_waiter_without_progress_gets_every_event_but_the_steps() -> None:
    bus = EventBus()
    async with bus.subscribe("j", progress=False) as waiter, bus.subscribe("j") as follower:
        for event in (step("j", 1), step("j", 2), final("j"), final("other")):
            bus.publish(event)
        assert drained(waiter) == [final("j")]
        assert drained(follower) == [step("j", 1), step("j", 2), final("j")]


async def test_steps_are_wanted_only_while_someone_follows_them() -> None:
    bus = EventBus()
    assert not bus.wants_progress("j")
    async with bus.subscribe("j", progress=False):
        assert not bus.wants_progress("j") and bus.listening_jobs() == ["j"]
        async with bus.subscribe("j"):
            async with bus.subscribe("j"):
                assert bus.wants_progress("j") and not bus.wants_progress("k")
            assert bus.wants_progress("j")  # one follower left
        assert not bus.wants_progress("j")
    assert bus.listening_jobs() == []
