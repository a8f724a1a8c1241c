"""The engine against real parts: SQLite store, local broker and storage, the tiny pipeline
(``engine_parts``). What a wait or a listing hands out is in test_front.py, thumbnails in
test_thumbnails.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_parts import engine, make_engine, parts, request, wait_final  # noqa: F401 - fixtures, by name

from reelserve.engine import batch_loop as batch_loop_module
from reelserve.engine import worker as worker_module
from reelserve.engine.engine import Engine, thumbnail_key, video_key
from reelserve.engine.runner import PipelineRunner
from reelserve.jobs.local_broker import LocalBroker
from reelserve.models import get_spec
from reelserve.schemas import Job, JobStatus, ReelserveError, VideoCreateRequest, resolve_request
from reelserve.storage.local import LocalStorage
from reelserve.video import probe_mp4


async def test_completes_and_stores_a_decodable_video(engine: Engine, parts: dict[str, Any]) -> None:
    job = await engine.submit(request("a lighthouse", seed=7))
    done = await wait_final(engine, job.id)
    assert done.status is JobStatus.completed and done.progress == 100 and done.params.seed == 7
    info = probe_mp4(parts["storage"].get(video_key(job.id)))
    assert (info.frames, info.width, info.height, info.fps) == (5, 32, 32, 8.0)
    assert not parts["storage"].exists(thumbnail_key(job.id))  # made when first asked for, not before
    assert parts["store"].transitions(job.id) == [
        (None, "queued"), ("queued", "in_progress"), ("in_progress", "completed"),
    ]


async def test_on_the_cpu_the_lane_writes_and_records_its_videos_without_the_event_loop(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop's thread is held (a blocking wait, on purpose) from before the run ends until the
    # completed record is saved: the lane goes from its run to its write and the record's save
    # without a trip through the loop.
    writing, write = threading.Event(), engine.finisher.write_outputs

    def noting_writer(job: Job, frames: object) -> float:
        writing.set()
        assert threading.current_thread().name.startswith("reelserve-pipeline")
        return write(job, frames)

    recorded, save = threading.Event(), parts["store"].save

    def noting_save(job: Job, expect: Any = None) -> bool:
        saved = save(job, expect)
        if job.status is JobStatus.completed and saved:
            recorded.set()
        return saved

    monkeypatch.setattr(engine.finisher, "write_outputs", noting_writer)
    monkeypatch.setattr(parts["store"], "save", noting_save)
    parts["pipeline"].hold()
    job = await engine.submit(request("a lighthouse written by its lane"))
    assert await asyncio.to_thread(parts["pipeline"].entered.wait, 30)
    parts["pipeline"].gate.set()
    assert writing.wait(60), "the write waited for the event loop"
    assert recorded.wait(60), "the completed record waited for the event loop"  # saved by the lane too
    done = await wait_final(engine, job.id)
    assert done.status is JobStatus.completed and done.timings.encode_s is not None
    assert parts["store"].transitions(job.id)[-1] == ("in_progress", "completed")


async def test_a_completed_record_the_store_refused_on_the_lane_is_saved_from_the_loop(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    refused, save = [], parts["store"].save

    def refusing_once(job: Job, expect: Any = None) -> bool:
        if job.status is JobStatus.completed and not refused:
            refused.append(threading.current_thread().name)
            raise OSError("database is locked")
        return save(job, expect)

    monkeypatch.setattr(parts["store"], "save", refusing_once)
    done = await wait_final(engine, (await engine.submit(request("a lighthouse saved twice"))).id)
    assert done.status is JobStatus.completed and refused == ["reelserve-pipeline_0"]
    stored = parts["store"].get(done.id)
    assert stored is not None and stored.status is JobStatus.completed and stored.video_key is not None


class FailingStorage(LocalStorage):
    """Refuses to store a file whose name ends with ``suffix``."""

    def __init__(self, root: Path, suffix: str) -> None:
        super().__init__(root)
        self.suffix = suffix

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(self.suffix):
            raise OSError(f"disk refused {key}")
        super().put(key, data)


async def test_a_job_whose_video_cannot_be_written_fails(parts: dict[str, Any], tmp_path: Path) -> None:
    parts["storage"] = FailingStorage(tmp_path / "refusing", ".mp4")
    engine = make_engine(parts, max_batch_size=1)
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        done = await wait_final(engine, (await engine.submit(request("an unwritable lighthouse"))).id)
    finally:
        await engine.stop()
    assert done.status is JobStatus.failed and done.error is not None
    assert done.error.code == "internal_error" and "disk refused" in done.error.message


async def test_failing_batch_fails_only_its_jobs(engine: Engine) -> None:
    bad = await engine.submit(request("boom goes the batch", num_inference_steps=2))
    good = await engine.submit(request("a quiet lake"))
    bad_done, good_done = await wait_final(engine, bad.id), await wait_final(engine, good.id)
    assert bad_done.status is JobStatus.failed
    assert bad_done.error is not None and "boom" in bad_done.error.message
    assert bad_done.error.code == "generation_failed"
    assert good_done.status is JobStatus.completed
    after = await wait_final(engine, (await engine.submit(request("still serving"))).id)
    assert after.status is JobStatus.completed


async def test_cancelled_queued_job_never_runs(engine: Engine, parts: dict[str, Any]) -> None:
    pipeline = parts["pipeline"]
    pipeline.gate.clear()
    pipeline.entered.clear()
    first = await engine.submit(request("holds the pipeline", num_inference_steps=2))
    assert await asyncio.to_thread(pipeline.entered.wait, 30)
    waiting = await engine.submit(request("never runs"))
    cancelled = await engine.cancel(waiting.id)
    assert cancelled.status is JobStatus.cancelled
    pipeline.gate.set()
    assert (await wait_final(engine, first.id)).status is JobStatus.completed
    assert parts["store"].transitions(waiting.id) == [(None, "queued"), ("queued", "cancelled")]
    assert all(waiting.id not in o.frames and waiting.id not in o.stopped_at for o in parts["runner"].outcomes)
    assert not parts["storage"].exists(video_key(waiting.id))


async def test_cancelled_running_job_stops_at_next_step(engine: Engine, parts: dict[str, Any]) -> None:
    steps = 40
    victim = await engine.submit(request("cancel me", num_inference_steps=steps, seed=1))
    mate = await engine.submit(request("finish me", num_inference_steps=steps, seed=2))
    async for event in engine.events(victim.id):
        if event.step is not None:
            break  # the batch is running: cancel between steps
    await engine.cancel(victim.id)
    mate_done = await wait_final(engine, mate.id)
    assert mate_done.status is JobStatus.completed and mate_done.batch_size == 2
    assert (await engine.get(victim.id)).status is JobStatus.cancelled
    outcome = await parts["runner"].outcome_of(mate.id)
    assert 1 <= outcome.stopped_at[victim.id] < steps
    assert victim.id not in outcome.frames
    assert not parts["storage"].exists(video_key(victim.id))
    # the batch-mate is exactly what it would have been alone
    alone = PipelineRunner(parts["runner"].pipeline, parts["runner"].device, parts["runner"].max_sequence_length)
    single = alone.run([("x", mate.params)]).frames["x"]
    assert np.abs(outcome.frames[mate.id] - single).max() <= 1e-4


async def test_unknown_model_and_bad_params_change_nothing(engine: Engine, parts: dict[str, Any]) -> None:
    from reelserve.schemas import ReelserveError

    with pytest.raises(ReelserveError) as err:
        await engine.submit(request("x", model="wan2.2-t2v-a14b"))
    assert err.value.param == "model"
    with pytest.raises(ReelserveError) as err:
        await engine.submit(VideoCreateRequest(prompt="x", num_frames=8))
    assert err.value.param == "num_frames" and "4k+1" in err.value.message
    assert parts["store"].list(10) == []


async def test_recover_requeues_what_a_crash_left(parts: dict[str, Any]) -> None:
    spec = get_spec("tiny")
    store = parts["store"]
    queued = Job(params=resolve_request(request("was queued", seed=1), "tiny", spec.limits))
    running = Job(params=resolve_request(request("was running", seed=2), "tiny", spec.limits))
    store.create(queued)
    store.create(running)
    running.status, running.attempts = JobStatus.in_progress, 1
    store.save(running)
    engine = make_engine(parts, max_batch_size=4)
    assert await engine.recover() == 2
    await engine.start(parts["runner"])
    try:
        for job in (queued, running):
            assert (await wait_final(engine, job.id)).status is JobStatus.completed
    finally:
        await engine.stop()
    assert store.transitions(running.id) == [
        (None, "queued"), ("queued", "in_progress"), ("in_progress", "queued"),
        ("queued", "in_progress"), ("in_progress", "completed"),
    ]
    assert store.get(running.id).attempts == 2  # type: ignore[union-attr]


async def test_stop_abandons_the_running_batch_for_the_next_start(parts: dict[str, Any]) -> None:
    engine = make_engine(parts, max_batch_size=4)
    await engine.start(parts["runner"])
    steps = 40
    job = await engine.submit(request("interrupted by shutdown", num_inference_steps=steps))
    async for event in engine.events(job.id):
        if event.step is not None:
            break
    await engine.stop()  # returns once the pipeline thread has let go of the batch
    outcome = parts["runner"].outcomes[-1]
    assert 1 <= outcome.stopped_at[job.id] < steps and outcome.frames == {}
    assert parts["store"].get(job.id).status is JobStatus.in_progress  # type: ignore[union-attr]
    restarted = make_engine(parts, max_batch_size=4)
    assert await restarted.recover() == 1
    await restarted.start(parts["runner"])
    try:
        assert (await wait_final(restarted, job.id)).status is JobStatus.completed
    finally:
        await restarted.stop()


class UnansweringBroker(LocalBroker):
    """A queue whose hand-back never answers, as a Redis connection stuck mid-reply would."""

    async def release(self) -> int:
        await asyncio.Event().wait()
        return 0


async def test_a_hand_back_that_never_answers_does_not_hold_up_the_drain(
    parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "HAND_BACK_S", 0.2)
    engine = make_engine(parts, max_batch_size=4, broker=UnansweringBroker())
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        async with asyncio.timeout(30):
            assert await engine.drain(timeout=5) == 0  # nothing given back: the pending list keeps it
    finally:
        await engine.stop()


class CancelSwallowingBroker(LocalBroker):
    """A queue whose wait for work does not end when cancelled, as a client library that swallows
    the cancellation mid-read would."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting, self.swallowed = asyncio.Event(), asyncio.Event()

    async def take(self, *args: Any, **kwargs: Any) -> tuple[str, str] | None:
        self.waiting.set()
        try:
            return await super().take(*args, **kwargs)
        except asyncio.CancelledError:
            self.swallowed.set()
            await asyncio.Event().wait()  # never ends (until cancelled again)
            raise


async def test_a_take_that_ignores_the_drain_does_not_hold_it_up(
    parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_loop_module, "STOP_TAKING_GRACE_S", 0.2)
    broker = CancelSwallowingBroker()
    engine = make_engine(parts, max_batch_size=4, broker=broker)
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        async with asyncio.timeout(30):  # the drain's own timeout is 600 s: only the grace ends it
            await broker.waiting.wait()  # the batch loop waits for work
            assert await engine.drain(timeout=600) == 0
        assert broker.swallowed.is_set()  # the take was waiting, was told to stop, and did not
    finally:
        await engine.stop()


class LoopWatching:
    """A real store (or storage) that notes every call made on a thread running an event loop."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.on_loop = inner, []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                self.on_loop.append(name)
            except RuntimeError:  # no loop on this thread: the store's thread, or the pipeline's
                pass
            return method(*args, **kwargs)

        return call


async def test_no_job_store_or_storage_call_runs_on_the_event_loop(parts: dict[str, Any]) -> None:
    store = parts["store"] = LoopWatching(parts["store"])
    storage = parts["storage"] = LoopWatching(parts["storage"])
    engine = make_engine(parts, max_batch_size=4)
    await engine.recover()
    await engine.start(parts["runner"])
    try:
        done = await wait_final(engine, (await engine.submit(request("a lantern"))).id)
        assert done.status is JobStatus.completed
        cancelled = await engine.cancel((await engine.submit(request("cancel me", num_inference_steps=50))).id)
        assert cancelled.status is JobStatus.cancelled
        assert [job.id for job in await engine.list(10, None)] == [cancelled.id, done.id]
        assert (await engine.content(done.id, "video")).key == done.video_key
        await engine.delete(done.id)
        assert not await asyncio.to_thread(storage.exists, done.video_key)
    finally:
        await engine.stop()
    assert store.on_loop == [] and storage.on_loop == []


async def test_a_queue_that_cannot_say_positions_does_not_hold_up_the_run(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Positions go out once a run is under way, and a failure to get them is news lost, not a batch.
    pipeline = parts["pipeline"]
    pipeline.hold()
    blocker = await engine.submit(request("a lighthouse holding the lane", num_inference_steps=2))
    assert await asyncio.to_thread(pipeline.entered.wait, 30)
    job = await engine.submit(request("a lighthouse while the queue is down"))

    async def unreachable(job_id: str) -> int | None:
        raise ConnectionError("the shared queue is down")

    monkeypatch.setattr(engine.worker.batches.broker, "position", unreachable)
    async with engine.bus.subscribe(job.id):  # someone listens: its position is asked for
        pipeline.gate.set()
        for waited in (blocker, job):
            assert (await wait_final(engine, waited.id)).status is JobStatus.completed
