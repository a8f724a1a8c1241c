"""Continuous batching in the engine: a job that arrives while a batch of its shape runs joins that
batch at its next step, and its video is written as soon as its row finishes, before the batch ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from engine_parts import make_engine, parts, request, wait_final  # noqa: F401 - fixtures by name
from support import StepRecorder

from reelserve.engine.engine import Engine
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.runner import PipelineRunner
from reelserve.schemas import Job, JobStatus


async def running(engine: Engine, job_id: str) -> None:
    """Until ``job_id`` is claimed (the feeder offers a claimed job before anything else can run)."""
    async for event in engine.events(job_id):
        if event.status is not JobStatus.queued:
            return


@pytest.fixture
async def held(parts: dict[str, Any]) -> AsyncIterator[StepRecorder]:  # noqa: F811
    """The batch holds before its second step until the test opens ``gate``."""
    runner = parts["runner"]
    runner.family = recorder = StepRecorder(runner.family.real, hold_at=2)
    yield recorder
    recorder.gate.set()


async def start(parts: dict[str, Any], policy: StepPolicy | None = None) -> Engine:  # noqa: F811
    engine = make_engine(parts, max_batch_size=4, step_policy=policy)
    await engine.recover()
    await engine.start(parts["runner"])
    return engine


def lone_video(parts: dict[str, Any], job: Job) -> np.ndarray:  # noqa: F811
    runner = parts["runner"]
    alone = PipelineRunner(runner.pipeline, runner.device, runner.max_sequence_length)
    return alone.run([("x", job.params)]).frames["x"]


async def test_a_job_joins_the_running_batch_and_completes_before_it(parts: dict[str, Any],  # noqa: F811
                                                                      held: StepRecorder) -> None:
    engine = await start(parts)
    try:
        first = await engine.submit(request("a red fox", num_inference_steps=8, seed=1))
        assert await asyncio.to_thread(held.held.wait, 60)  # the batch is running, before its second step
        joiner = await engine.submit(request("waves on a beach", num_inference_steps=2, seed=2, guidance_scale=3.0))
        await running(engine, joiner.id)
        held.gate.set()
        joined, ended = await wait_final(engine, joiner.id), await wait_final(engine, first.id)
        assert joined.status is ended.status is JobStatus.completed
        assert joined.completed_at is not None and ended.completed_at is not None
        assert joined.completed_at < ended.completed_at  # handed out as its row finished
        assert parts["runner"].calls == 1  # one batch ran both
        assert engine.metrics.joined_rows._value.get() == 1
        for job in (first, joiner):
            assert np.abs(parts["runner"].handed[job.id] - lone_video(parts, job)).max() <= 1e-5
    finally:
        await engine.stop()


async def test_with_continuous_batching_off_a_job_waits_for_the_next_batch(parts: dict[str, Any],  # noqa: F811
                                                                          held: StepRecorder) -> None:
    engine = await start(parts, StepPolicy(join=False))
    try:
        first = await engine.submit(request("a red fox", num_inference_steps=8, seed=1))
        assert await asyncio.to_thread(held.held.wait, 60)
        later = await engine.submit(request("waves on a beach", num_inference_steps=2, seed=2))
        held.gate.set()
        waited, ended = await wait_final(engine, later.id), await wait_final(engine, first.id)
        assert waited.completed_at is not None and ended.completed_at is not None
        assert waited.completed_at > ended.completed_at
        assert parts["runner"].calls == 2 and engine.metrics.joined_rows._value.get() == 0
    finally:
        await engine.stop()


async def test_a_more_urgent_job_of_another_shape_stops_the_joining(parts: dict[str, Any],  # noqa: F811
                                                                    held: StepRecorder) -> None:
    """A batch that keeps growing would keep the urgent job from the lane: the same-shape job waits.
    (Without preemption, which would park the batch at once: that is the next test.)"""
    engine = await start(parts, StepPolicy(preempt=False))
    try:
        first = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="standard"))
        assert await asyncio.to_thread(held.held.wait, 60)
        urgent = await engine.submit(request("a city", size="48x32", seed=3, priority="realtime"))
        same_shape = await engine.submit(request("waves", num_inference_steps=2, seed=2, priority="standard"))
        held.gate.set()
        done = {job.id: await wait_final(engine, job.id) for job in (first, urgent, same_shape)}
        assert all(job.status is JobStatus.completed for job in done.values())
        assert engine.metrics.joined_rows._value.get() == 0
        assert done[urgent.id].started_at < done[same_shape.id].started_at  # type: ignore[operator]
    finally:
        await engine.stop()


async def test_a_batch_that_fails_after_a_row_was_handed_out_fails_only_the_rest(parts: dict[str, Any]) -> None:  # noqa: F811
    runner = parts["runner"]
    runner.family = held = StepRecorder(runner.family, hold_at=1)  # over the gate, whose "boom" falls over
    engine = await start(parts)
    try:
        first = await engine.submit(request("a red fox", num_inference_steps=1, seed=1))
        assert await asyncio.to_thread(held.held.wait, 60)
        broken = await engine.submit(request("boom", num_inference_steps=3, seed=2))
        await running(engine, broken.id)
        held.gate.set()  # the first row ends at this step; the joiner falls over as it joins
        done, failed = await wait_final(engine, first.id), await wait_final(engine, broken.id)
        assert done.status is JobStatus.completed and parts["storage"].exists(done.video_key)
        assert failed.status is JobStatus.failed and failed.error is not None
        assert failed.error.code == "generation_failed" and "boom" in failed.error.message
    finally:
        held.gate.set()
        await engine.stop()


@pytest.mark.parametrize("policy", [StepPolicy(), StepPolicy(join=False)], ids=["joining", "not-joining"])
async def test_a_batch_makes_way_for_a_more_urgent_job_and_resumes_where_it_stopped(parts: dict[str, Any],  # noqa: F811
                                                                                    held: StepRecorder,
                                                                                    policy: StepPolicy) -> None:
    """Preemption: the batch-tier row is parked at its next step, the realtime job of another shape
    runs, and the parked row goes on from its step to the video an uninterrupted run makes."""
    engine = await start(parts, policy)
    try:
        slow = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)  # before its second step
        urgent = await engine.submit(request("a city", size="48x32", num_inference_steps=3, seed=3,
                                             priority="realtime"))
        held.gate.set()
        done = {job.id: await wait_final(engine, job.id) for job in (slow, urgent)}
        assert all(job.status is JobStatus.completed for job in done.values())
        assert done[slow.id].preempted == 1 and done[urgent.id].preempted == 0
        assert done[urgent.id].completed_at < done[slow.id].completed_at  # type: ignore[operator]
        assert engine.metrics.preempted_rows._value.get() == 1
        # 8 + 3 evaluations: the parked row went on from its step, it did not start again.
        assert len(held.steps) == 8 + 3
        assert np.abs(parts["runner"].handed[slow.id] - lone_video(parts, slow)).max() <= 1e-5
        assert len(engine.worker.batches.steps.parked) == 0
    finally:
        await engine.stop()


async def test_with_preemption_off_the_urgent_job_waits_for_the_batch(parts: dict[str, Any],  # noqa: F811
                                                                     held: StepRecorder) -> None:
    engine = await start(parts, StepPolicy(preempt=False))
    try:
        slow = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)
        urgent = await engine.submit(request("a city", size="48x32", num_inference_steps=3, priority="realtime"))
        held.gate.set()
        done = {job.id: await wait_final(engine, job.id) for job in (slow, urgent)}
        assert done[slow.id].preempted == 0 and engine.metrics.preempted_rows._value.get() == 0
        assert done[urgent.id].completed_at >= done[slow.id].completed_at  # type: ignore[operator]
        assert len(held.steps) == 8 + 3
    finally:
        await engine.stop()


async def test_a_full_batch_also_makes_way(parts: dict[str, Any], held: StepRecorder) -> None:  # noqa: F811
    engine = make_engine(parts, max_batch_size=1)  # a batch of one is full: nothing can join it
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        slow = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)
        same = await engine.submit(request("a blue fox", num_inference_steps=8, seed=2, priority="batch"))
        urgent = await engine.submit(request("a city", size="48x32", num_inference_steps=3, priority="realtime"))
        held.gate.set()
        done = {job.id: await wait_final(engine, job.id) for job in (slow, same, urgent)}
        assert done[slow.id].preempted == 1 and engine.metrics.joined_rows._value.get() == 0
        assert done[urgent.id].completed_at < done[slow.id].completed_at  # type: ignore[operator]
        assert len(held.steps) == 8 + 8 + 3
    finally:
        await engine.stop()


async def test_a_preempted_job_cancelled_while_it_waits_leaves_no_parked_row(parts: dict[str, Any],  # noqa: F811
                                                                             held: StepRecorder) -> None:
    runner = parts["runner"]
    engine = await start(parts)
    try:
        slow = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)
        second = StepRecorder(held.real, hold_at=2)  # holds the urgent job, so the parked one waits
        runner.family = second
        urgent = await engine.submit(request("a city", size="48x32", num_inference_steps=3, priority="realtime"))
        held.gate.set()
        assert await asyncio.to_thread(second.held.wait, 60)  # the urgent job runs: the slow one is parked
        assert slow.id in engine.worker.batches.steps.parked
        assert (await engine.cancel(slow.id)).status is JobStatus.cancelled
        assert slow.id not in engine.worker.batches.steps.parked
        second.gate.set()
        assert (await wait_final(engine, urgent.id)).status is JobStatus.completed
    finally:
        await engine.stop()


async def test_a_parked_row_that_does_not_fit_in_memory_goes_to_storage_and_comes_back(  # noqa: F811
    parts: dict[str, Any], held: StepRecorder
) -> None:
    policy = StepPolicy(parked_limit_bytes=0, resume_version="tiny:code:test|{}")  # memory holds nothing
    engine = await start(parts, policy)
    try:
        slow = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)
        urgent = await engine.submit(request("a city", size="48x32", num_inference_steps=3, priority="realtime"))
        held.gate.set()
        done = await wait_final(engine, slow.id)
        assert (await wait_final(engine, urgent.id)).status is JobStatus.completed
        assert done.status is JobStatus.completed and done.preempted == 1 and done.parked_key is not None
        assert len(held.steps) == 8 + 3 and engine.metrics.resumed_steps._value.get() >= 1
        assert not parts["storage"].exists(done.parked_key)  # read back, then removed
        assert np.abs(parts["runner"].handed[slow.id] - lone_video(parts, slow)).max() <= 1e-5
    finally:
        await engine.stop()


async def test_a_full_batch_swaps_its_least_urgent_row_for_a_more_urgent_job_where_a_row_is_cheap(
    parts: dict[str, Any], held: StepRecorder, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """Where one row more costs little (a GPU's cost curve: patched in, as the tiny model on a CPU has
    a linear one), a full batch parks only its least urgent row for a more urgent job of its shape;
    the parked row goes back to the queue at once and resumes from its step."""
    from reelserve.engine import step_scheduling

    monkeypatch.setattr(step_scheduling, "grows_cheaply", lambda *_: True)
    engine = make_engine(parts, max_batch_size=2)
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        first = await engine.submit(request("a red fox", num_inference_steps=8, seed=1, priority="batch"))
        assert await asyncio.to_thread(held.held.wait, 60)  # running, before its second step
        second = await engine.submit(request("a blue fox", num_inference_steps=8, seed=2, priority="batch"))
        await running(engine, second.id)  # it joined: the batch is full
        urgent = await engine.submit(request("a city", num_inference_steps=3, seed=3, priority="standard"))
        await running(engine, urgent.id)  # claimed to take a slot
        held.gate.set()
        done = {job.id: await wait_final(engine, job.id) for job in (first, second, urgent)}
        assert all(job.status is JobStatus.completed for job in done.values())
        assert (done[first.id].preempted, done[second.id].preempted, done[urgent.id].preempted) == (0, 1, 0)
        assert done[urgent.id].completed_at < done[second.id].completed_at  # type: ignore[operator]
        assert engine.metrics.preempted_rows._value.get() == 1
        for job in (first, second, urgent):  # the swapped-out row went on from its step
            assert np.abs(parts["runner"].handed[job.id] - lone_video(parts, job)).max() <= 1e-5
        assert len(engine.worker.batches.steps.parked) == 0
    finally:
        await engine.stop()
