"""EventBus: fan-out by job, and step events only to those who follow steps."""

from __future__ import annotations

import asyncio

from reelserve.engine.events import EventBus, status_event
from reelserve.schemas import EventType, GenerationParams, Job, JobEvent, JobStatus


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


def test_a_final_status_event_carries_a_copy_of_its_job_for_this_process_only() -> None:
    params = GenerationParams(model="tiny", prompt="a fox", width=32, height=32, num_frames=5, fps=8,
                              num_inference_steps=2, guidance_scale=5.0, seed=1)
    job = Job(id="video_j", params=params, created_at=1.0, status=JobStatus.in_progress)
    assert status_event(job).job is None  # not final: a waiter goes on waiting
    job.status, job.progress = JobStatus.completed, 100
    event = status_event(job)
    assert event.job == job and event.job is not job
    job.progress = 7  # the sender's later changes are not the event's
    assert event.job.progress == 100
    assert "video_j" in event.model_dump_json() and '"params"' not in event.model_dump_json()
    assert JobEvent.model_validate_json(event.model_dump_json()).job is None  # as another process gets it
