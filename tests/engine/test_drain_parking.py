"""A draining worker parks its running rows to storage and hands their jobs back; the worker that
runs a job next (here a new engine on the same store and storage) resumes it at its step, to the
video an uninterrupted run makes. A row parked by other weights or settings starts again."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from engine_parts import make_engine, parts, request, wait_final  # noqa: F401 - fixtures by name
from support import StepRecorder, eventually, wait_until

from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.storage_keys import parked_key
from reelserve.schemas import JobStatus

VERSION = "tiny:code:test|{}"


async def drain_mid_run(parts: dict[str, Any], steps: int) -> tuple[str, StepRecorder]:  # noqa: F811
    """Runs a job, drains the engine before its third step; returns its id and the family that ran it."""
    runner = parts["runner"]
    runner.family = held = StepRecorder(runner.family.real, hold_at=3)
    engine = make_engine(parts, max_batch_size=4, step_policy=StepPolicy(resume_version=VERSION))
    await engine.recover()
    await engine.start(runner)
    try:
        job = await engine.submit(request("a red fox", num_inference_steps=steps, seed=7))
        assert await asyncio.to_thread(held.held.wait, 60)
        draining = asyncio.create_task(engine.drain(timeout=60))
        await eventually(lambda: engine.worker.batches.steps.spilling)  # asked to make way before the step runs
        held.gate.set()
        await draining
    finally:
        held.gate.set()
        await engine.stop()
    return job.id, held


async def test_a_drained_row_resumes_at_its_step_on_the_next_worker(parts: dict[str, Any]) -> None:  # noqa: F811
    job_id, first = await drain_mid_run(parts, steps=8)
    parked = parts["store"].get(job_id)
    assert parked.status is JobStatus.queued and parked.parked_key == parked_key(job_id, 1)
    assert parts["storage"].exists(parked.parked_key)
    ran_before = len(first.steps)
    assert ran_before == 3  # steps 1-3; it was parked at the boundary after step 3

    runner = parts["runner"]
    runner.family = second = StepRecorder(first.real)
    engine = make_engine(parts, max_batch_size=4, step_policy=StepPolicy(resume_version=VERSION))
    assert await engine.recover() == 1
    await engine.start(runner)
    try:
        done = await wait_final(engine, job_id)
    finally:
        await engine.stop()
    assert done.status is JobStatus.completed
    assert len(second.steps) == 8 - ran_before  # resumed, not run again
    assert engine.metrics.resumed_steps._value.get() == ran_before
    assert not parts["storage"].exists(parked.parked_key)
    alone = PipelineRunner(runner.pipeline, runner.device, runner.max_sequence_length)
    lone = alone.run([("x", done.params)]).frames["x"]
    assert np.abs(runner.handed[job_id] - lone).max() <= 1e-5


async def test_a_row_parked_by_other_weights_starts_again(parts: dict[str, Any]) -> None:  # noqa: F811
    job_id, first = await drain_mid_run(parts, steps=6)
    runner = parts["runner"]
    runner.family = second = StepRecorder(first.real)
    engine = make_engine(parts, max_batch_size=4, step_policy=StepPolicy(resume_version="tiny:code:other|{}"))
    await engine.recover()
    await engine.start(runner)
    try:
        done = await wait_final(engine, job_id)
    finally:
        await engine.stop()
    assert done.status is JobStatus.completed and len(second.steps) == 6  # from its first step


async def test_without_a_resume_version_a_drain_lets_the_batch_finish(parts: dict[str, Any]) -> None:  # noqa: F811
    runner = parts["runner"]
    runner.family = held = StepRecorder(runner.family.real, hold_at=2)
    engine = make_engine(parts, max_batch_size=4)
    await engine.recover()
    await engine.start(runner)
    try:
        job = await engine.submit(request("a red fox", num_inference_steps=5, seed=7))
        assert await asyncio.to_thread(held.held.wait, 60)
        draining = asyncio.create_task(engine.drain(timeout=60))
        held.gate.set()
        await draining
        assert parts["store"].get(job.id).status is JobStatus.completed
    finally:
        held.gate.set()
        await engine.stop()


async def test_after_a_crash_the_next_run_resumes_from_the_last_checkpoint(parts: dict[str, Any]) -> None:  # noqa: F811
    runner = parts["runner"]
    policy = StepPolicy(resume_version=VERSION, checkpoint_steps=2)
    runner.family = first = StepRecorder(runner.family.real, hold_at=6)
    engine = make_engine(parts, max_batch_size=4, step_policy=policy)
    await engine.recover()
    await engine.start(runner)
    try:
        job = await engine.submit(request("a red fox", num_inference_steps=9, seed=3))
        assert await asyncio.to_thread(held_wait, first)  # steps 1-5 ran: checkpoints after 2 and 4
        assert parts["storage"].exists(parked_key(job.id, 1))
        # The worker is lost: its row goes no further. ``stop`` waits on the loop's thread for the
        # pipeline thread, so the held step is let go from another thread, once the row was told to stop.
        told = lambda: job.id in engine.stop_requested  # noqa: E731
        opener = threading.Thread(target=lambda: wait_until(told) and first.gate.set())
        opener.start()
        await engine.stop()
        opener.join()
    finally:
        first.gate.set()
    assert parts["store"].get(job.id).status is JobStatus.in_progress

    runner.family = second = StepRecorder(first.real)
    engine = make_engine(parts, max_batch_size=4, step_policy=policy)
    assert await engine.recover() == 1
    await engine.start(runner)
    try:
        done = await wait_final(engine, job.id)
    finally:
        await engine.stop()
    assert done.status is JobStatus.completed and done.attempts == 2
    assert len(second.steps) == 9 - 4  # from the checkpoint after step 4
    assert engine.metrics.resumed_steps._value.get() == 4
    assert not parts["storage"].exists(parked_key(job.id, 1)) and not parts["storage"].exists(parked_key(job.id, 2))
    alone = PipelineRunner(runner.pipeline, runner.device, runner.max_sequence_length)
    assert np.abs(runner.handed[job.id] - alone.run([("x", done.params)]).frames["x"]).max() <= 1e-5


def held_wait(recorder: StepRecorder) -> bool:
    return recorder.held.wait(60)
