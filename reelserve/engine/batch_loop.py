"""The batch loop: the worker's one consumer of the queue. It takes a batch from the scheduler,
claims its jobs in the store, runs them on the pipeline thread and hands the outcome to the
finisher. It also stops the rows another worker took over (the lease keeper tells it which)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from reelserve.engine.events import Events, status_event
from reelserve.engine.finisher import QUEUED, RETRY_S, UNFINISHED, JobFinisher, RunningJobs
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.lane_writes import write_here
from reelserve.engine.outcome import BatchOutcome
from reelserve.engine.previews import PreviewOut
from reelserve.engine.step_scheduling import RunningRows, StepScheduling
from reelserve.engine.progress import StepProgress
from reelserve.engine.scheduler import Scheduler
from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.base import Broker
from reelserve.metrics import Metrics
from reelserve.parallel.failure import RankFailure
from reelserve.schemas import ErrorCode, EventType, Job, JobError, JobEvent, JobStatus
from reelserve.stats import StatsRecorder

if TYPE_CHECKING:  # the runner imports torch; the API process never runs one
    from reelserve.engine.lanes import LaneBoost, PipelineLanes

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a drain waits for the batcher to stop waiting for work once told to. Seen once in CI: a
# Redis worker's take did not end on its cancellation and the worker ignored SIGTERM for 120 s. Past
# this, the take is left behind; what it had gathered stays in the queue's pending list, and live
# workers reclaim it.
STOP_TAKING_GRACE_S = 5.0
# A job whose runs lost a rank of the parallel group this many times fails (it may be what kills it).
RANK_FAILURES_TO_FAIL = 3


class BatchLoop:
    """``run`` serves batches until ``draining`` is set: it takes a batch whenever a pipeline lane is
    free (lane 0, the pipeline thread, first) and runs it there, so the lanes run batches at once. A
    drain stops the taking (``stop_taking``) and lets the running batches finish. ``stop_requested``
    is shared with the lanes' threads, which drop those rows at their next step boundary."""

    def __init__(
        self, *, store: AsyncJobStore, broker: Broker, scheduler: Scheduler, finisher: JobFinisher,
        progress: StepProgress, metrics: Metrics, stats: StatsRecorder, bus: Events, running: RunningJobs,
        stop_requested: set[str], accelerations: list[str], step_policy: StepPolicy | None = None,
    ) -> None:
        self.store, self.broker, self.scheduler, self.finisher = store, broker, scheduler, finisher
        self.progress, self.metrics, self.stats, self.bus = progress, metrics, stats, bus
        self.running, self.stop_requested, self.accelerations = running, stop_requested, accelerations
        self.draining = False
        self.rank_failures: dict[str, int] = {}  # job id -> runs of it that lost a rank of the group
        # Shared queue: jobs taken over from a dead worker (they may be in progress in the store).
        self.reclaimed: set[str] = set()
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="reelserve-pipeline")
        self._batches: dict[int, asyncio.Task[None]] = {}  # lane -> the batch it runs
        self._taking: asyncio.Future[list[str]] | None = None
        self._stop_taking = asyncio.Event()
        self._abandoned: set[asyncio.Future[list[str]]] = set()  # takes that ignored a drain
        self._progress_lock = threading.Lock()  # the lanes' step listeners, one step at a time
        self.boost: LaneBoost | None = None  # while running
        self.previews = PreviewOut(finisher.storage, bus, stop_requested)
        self.steps = StepScheduling(
            policy=step_policy or StepPolicy(), broker=broker, scheduler=scheduler, store=store, metrics=metrics,
            bus=bus, running=running, reclaimed=self.reclaimed, storage=finisher.storage,
            claim=lambda job_ids, lane: self.claim(job_ids, lane, joining=True),
        )

    async def on_pipeline_thread(self, call: Callable[..., T], *args: object) -> T:
        """Run ``call`` on the thread that runs lane 0's batches (see ``Worker.on_model_thread``)."""
        return await asyncio.get_running_loop().run_in_executor(self._pipeline_thread, call, *args)

    def stop_taking(self) -> None:
        """A drain: stop waiting for the next batch (the batcher hands back what it gathered)."""
        self._stop_taking.set()
        if self._taking is not None:
            self._taking.cancel()

    def shutdown(self) -> None:
        """After ``run`` ends: wait for an abandoned pipeline call to reach its next step and leave."""
        self._pipeline_thread.shutdown(wait=True, cancel_futures=True)

    async def run(self, lanes: PipelineLanes) -> None:
        """Until ``draining``: for each free lane, take a batch, claim its jobs and run them there;
        then wait for the running batches. Cancelled: the running batches are abandoned too."""
        from reelserve.engine.lanes import LaneBoost  # here: the API process never runs a model

        self.boost = boost = LaneBoost(lanes)
        watching = asyncio.create_task(boost.watch_load(), name="reelserve-machine-load")
        try:
            while not self.draining:
                if len(self._batches) == lanes.lanes:
                    await asyncio.wait(set(self._batches.values()), return_when=asyncio.FIRST_COMPLETED)
                    continue
                job_ids = await self._take()
                opened_for = self.scheduler.batcher.opened_for  # this batch's (taking is one at a time)
                await boost.release(self._batches.get(0))  # a lone batch's extra threads go back to its lane
                lane = min(set(range(lanes.lanes)) - set(self._batches))
                batch = await self._claim(job_ids, lane) if job_ids else []
                if not batch:
                    continue
                # Every lane's threads for a batch that finds the worker idle and nothing behind it,
                # unless other processes keep a core busy (it gives them back at its next step if
                # another batch comes; see LaneBoost).
                alone = lanes.boost is not None and not self._batches and await self._queue_empty()
                threads = boost.begin() if alone else None
                task = asyncio.create_task(self._run_batch(batch, lanes, lane, threads, boost, opened_for))
                self._batches[lane] = task
                task.add_done_callback(lambda _, lane=lane: self._batches.pop(lane, None) and self.steps.wake())
                self.steps.wake()  # every lane may be busy now: running batches may take joiners
        except asyncio.CancelledError:
            for task in self._batches.values():
                task.cancel()
            await asyncio.gather(*self._batches.values(), return_exceptions=True)
            raise
        finally:
            watching.cancel()
        await asyncio.gather(*self._batches.values(), return_exceptions=True)

    async def _queue_empty(self) -> bool:
        try:
            return await self.broker.depth() == 0
        except Exception:  # noqa: BLE001 - unreachable: no boost; taking work will wait for the queue
            return False

    async def _take(self) -> list[str]:
        """The next batch's job ids; empty when a drain began or the queue failed (after a pause)."""
        self._taking = taking = asyncio.ensure_future(self.scheduler.next_batch())
        stopping = asyncio.ensure_future(self._stop_taking.wait())
        try:
            await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not taking.done():  # a drain: the batcher hands back what it gathered and ends
                taking.cancel()
                await asyncio.wait({taking}, timeout=STOP_TAKING_GRACE_S)
        except asyncio.CancelledError:
            taking.cancel()
            raise
        finally:
            stopping.cancel()
            self._taking = None
        if not taking.done():
            log.warning("waiting for work did not end within %.0fs of the drain; left behind", STOP_TAKING_GRACE_S)
            self._abandoned.add(taking)
            taking.add_done_callback(self._abandoned.discard)
            return []
        if taking.cancelled():
            return []
        try:
            return taking.result()
        except Exception as exc:  # noqa: BLE001 - the shared queue is unreachable: wait for it, lose nothing
            log.warning("taking work failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
            return []

    async def _claim(self, job_ids: list[str], lane: int) -> list[Job]:
        """``claim``, keeping the batch when the store or queue is unreachable (after a pause)."""
        try:
            batch = await self.claim(job_ids, lane)
            await self.scheduler.count_queue()
        except Exception as exc:  # noqa: BLE001 - the store or queue is unreachable; the batch is kept
            log.warning("claiming %s failed (%s: %s); retrying", job_ids, type(exc).__name__, exc)
            self.reclaimed.update(job_ids)  # some may be in progress already, by this worker
            await self.scheduler.hand_back(job_ids)
            await asyncio.sleep(RETRY_S)
            return []
        return batch

    async def _run_batch(self, batch: list[Job], lanes: PipelineLanes, lane: int, threads: int | None,
                         boost: LaneBoost, opened_for: int | None = None) -> None:
        """Run claimed ``batch`` on ``lane`` (with ``threads``: boosted), with the jobs that join it
        (``join_feeder``), each finished as its row finishes."""
        loop = asyncio.get_running_loop()
        self.running.claimed.update(job.id for job in batch)
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(batch))
        self.stats.batch_ran(len(batch))
        params = [(job.id, job.params) for job in batch]
        rows = RunningRows(batch, started)
        joins, feeding = self.steps.start(rows, lane, lanes.joins_rows(lane),
                                          lambda: not self.draining and len(self._batches) == lanes.lanes and not lanes.contended(),
                                          opened_for)

        def on_step(ids: list[str], step: int, total: int) -> None:  # on the lane's thread
            if threads is not None:
                boost.at_step()
            try:
                with self._progress_lock:
                    events = self.progress.on_step(ids, step, total)
            except Exception as exc:  # noqa: BLE001 - progress is best-effort; the run goes on
                log.warning("recording progress failed (%s: %s)", type(exc).__name__, exc)
                return
            for event in events:
                loop.call_soon_threadsafe(self.bus.publish, event)

        thread = self._pipeline_thread if lane == 0 else lanes.thread(lane)
        def on_preview(job_id: str, step: int, total: int, image: bytes) -> None:  # on the lane's thread
            loop.call_soon_threadsafe(lambda: self.previews.show(rows.jobs[job_id], step, total, image))

        finished = functools.partial(self._row_finished, loop, rows, lanes.on_cpu,
                                     None if feeding is None else feeding.wake)
        running = loop.run_in_executor(thread, functools.partial(
            _resident, lanes, batch, lanes.run_lane, lane, params, on_step, self.stop_requested.__contains__, threads,
            joins, finished, functools.partial(self.steps.resume, rows, lanes.runners[lane].device),
            self.steps.checkpointer(rows), on_preview,
            lambda job_id, row: loop.call_soon_threadsafe(self.steps.swapped_out, rows, job_id, row)))
        try:
            await self.publish_positions()  # once the run is under way: a shared queue answers over the network
            outcome = await asyncio.shield(running)
        except asyncio.CancelledError:
            # The thread runs on: have it drop every row at its next step boundary.
            self.stop_requested.update(rows.jobs)
            running.cancel()
            raise
        except RankFailure as exc:  # the worker's process group lost a rank and is built again: run them again
            await self._rerun_after_rank_failure(rows, batch, lane, time.perf_counter() - started, exc)
            return
        except Exception as exc:  # a broken batch fails its own jobs, never the engine
            log.exception("pipeline call failed for %s", list(rows.jobs))
            unfinished = rows.unfinished()  # a row handed out before the failure stands
            self.forget(list(rows.jobs.values()))
            self.scheduler.batch_done(unfinished or batch, [], time.perf_counter() - started, failed=True,
                                      fit=None, lane=lane)
            self.finisher.fail(unfinished, JobError(code=ErrorCode.generation_failed, message=f"{type(exc).__name__}: {exc}"))
            return
        finally:
            if threads is not None:
                boost.end()
            if feeding is not None:
                feeding.task.cancel()
            self.steps.end(joins)
        await self._settle(rows, outcome, lane)

    async def _rerun_after_rank_failure(self, rows: RunningRows, batch: list[Job], lane: int, elapsed: float,
                                        exc: RankFailure) -> None:
        """The unfinished jobs of a batch that lost a rank go back to the front of the queue (rows already
        handed out stand); a job whose runs lost a rank ``RANK_FAILURES_TO_FAIL`` times fails instead."""
        self.metrics.parallel_rank_failures.inc()
        unfinished = rows.unfinished()
        self.forget(list(rows.jobs.values()))
        self.scheduler.batch_done(unfinished or batch, [], elapsed, failed=True, fit=None, lane=lane)
        again, failed = [], []
        for job in unfinished:
            self.rank_failures[job.id] = self.rank_failures.get(job.id, 0) + 1
            (failed if self.rank_failures[job.id] >= RANK_FAILURES_TO_FAIL else again).append(job)
        log.warning("batch %s lost a rank (%s): %d job(s) run again, %d failed", [job.id for job in batch], exc,
                    len(again), len(failed))
        if failed:
            self.finisher.fail(failed, JobError(
                code=ErrorCode.generation_failed,
                message=f"a rank of the parallel worker died in {RANK_FAILURES_TO_FAIL} runs of this job ({exc})"))
        if again:
            await self.steps.hand_back([job.id for job in again], claimed=True)

    async def _settle(self, rows: RunningRows, outcome: BatchOutcome, lane: int) -> None:
        """After a run: parked rows' jobs back in the queue, the rest of the bookkeeping done (each
        finished row's job was handed on as it finished)."""
        await asyncio.gather(*rows.requeues)  # rows swapped out are back in the queue
        jobs = [job for job in rows.jobs.values() if job.id not in rows.left]
        for job_id, row in outcome.parked.items():
            await self.steps.requeue_parked(rows.jobs[job_id], row)
        if outcome.unstarted:
            await self.steps.hand_back(outcome.unstarted, claimed=True)
        self.finisher.release_unfinished(rows.unfinished())
        for job_id in rows.finished:
            self.rank_failures.pop(job_id, None)
        self.forget(jobs)
        self.metrics.inference.observe(outcome.inference_s)
        self.scheduler.batch_done(jobs, outcome.calls, outcome.inference_s, failed=False,
                                  fit=outcome.fit_batch_size, lane=lane)
        for job_id, error in outcome.errors.items():  # rows that do not fit even alone
            self.finisher.fail([rows.jobs[job_id]], error)

    def _row_finished(self, loop: asyncio.AbstractEventLoop, rows: RunningRows, on_cpu: bool,
                      wake: asyncio.Event | None, job_id: str, frames: np.ndarray) -> None:
        """A row's video, on the lane's thread, as the row finishes: the batch goes on meanwhile.
        On the CPU the lane writes it at once, itself: its core has nothing else to do, and the encode
        never competes with another lane's batch for the cores (``lane_writes``). On a GPU the
        finisher's thread writes it beside the running batch."""
        job = rows.jobs[job_id]
        rows.finished.add(job_id)
        self.steps.row_done(job_id)
        inference_s = time.perf_counter() - rows.started[job_id]
        loop.call_soon_threadsafe(self._row_out, wake)  # before the write: ahead of anything it lets a client see
        if on_cpu:
            write = functools.partial(self.finisher.write_and_record, job, frames, inference_s)
            write_here(write, lambda future: loop.call_soon_threadsafe(self.finisher.take_written, job, future))
        else:
            loop.call_soon_threadsafe(self.finisher.write_row, job, frames, inference_s)

    def _row_out(self, wake: asyncio.Event | None) -> None:
        """A row's video came out (on the loop, before it is saved): the pipeline works, so an open
        circuit closes before anyone can see the job completed; and there is room for a joiner."""
        self.scheduler.pipeline_worked()
        if wake is not None:
            wake.set()

    async def claim(self, job_ids: list[str], lane: int = 0, joining: bool = False) -> list[Job]:
        """Mark the taken jobs in progress in the store (compare-and-set); return those this process
        won. ``joining``: they join the batch running on ``lane``, which has started already."""
        now = time.time()
        waiting = []
        for job_id in job_ids:
            job = await self.store.get(job_id)
            reclaimed = job_id in self.reclaimed
            self.reclaimed.discard(job_id)
            if job is None or job.status.final:  # cancelled or deleted while it waited, or done elsewhere
                await self.broker.ack(job_id)
                continue
            if job.status is JobStatus.in_progress and not reclaimed:
                continue  # a duplicate entry of a job running elsewhere; that run acks it
            if job.status is JobStatus.queued and self.scheduler.expired(job, now):
                await self.finisher.expire(job, "its deadline passed before it could start")
                continue
            waiting.append(job)
        if not waiting:
            return []
        if joining:
            finish_by = now + self.scheduler.cost_model.predict(waiting[0].params, len(waiting))
        else:
            finish_by = self.scheduler.batch_started(waiting[0].params, len(waiting), lane)
        claimed = []
        write_s = self.scheduler.predict_finish(waiting[0].params)  # the rows' outputs are written one by one
        for position, job in enumerate(waiting, start=1):
            await self.steps.find_checkpoint(job)  # a run lost before this one may have left one
            expect = UNFINISHED if job.status is JobStatus.in_progress else QUEUED  # reclaimed: was running
            job.status, job.started_at, job.attempts = JobStatus.in_progress, now, job.attempts + 1
            job.accelerations = list(self.accelerations)  # what this process really runs with
            job.timings.queue_s = now - job.created_at
            job.estimated_completion_at, job.batch_size = finish_by + position * write_s, len(waiting)
            if await self.store.save(job, expect=expect):
                self.scheduler.claim(job, now)
                self.metrics.queue_wait.observe(job.timings.queue_s)
                self.bus.publish(status_event(job))
                claimed.append(job)
        return claimed

    def forget(self, batch: list[Job]) -> None:
        for job in batch:
            self.stop_requested.discard(job.id)
            self.progress.forget(job.id)
            self.running.lost.discard(job.id)

    def drop_lost(self, job_ids: list[str]) -> None:
        """Another worker took these over (this one stalled): stop them here; that worker finishes them."""
        running = [job_id for job_id in job_ids if job_id in self.running.claimed]
        self.running.lost.update(running)
        self.stop_requested.update(running)

    async def give_up(self, job_id: str) -> None:
        """Delivered to workers too often (each one died or stalled with it): fail it for good."""
        job = await self.store.get(job_id)
        if job is not None and not job.status.final:
            await self.finisher.give_up(job)

    async def publish_positions(self) -> None:
        """Tell listeners of waiting jobs that the queue moved (best-effort: a queue that cannot be
        reached now is missed once; listeners re-read on their own)."""
        try:
            for job_id in self.bus.listening_jobs():
                position = await self.broker.position(job_id)
                if position is not None:
                    self.bus.publish(JobEvent(job_id=job_id, type=EventType.queued, status=JobStatus.queued,
                                              queue_position=position))
        except Exception as exc:  # noqa: BLE001 - the batch is running; positions are only news
            log.warning("publishing queue positions failed (%s: %s)", type(exc).__name__, exc)


def _resident(lanes: PipelineLanes, batch: list[Job], run: Callable[..., BatchOutcome], *args: object) -> BatchOutcome:
    """``run(*args)`` with the model's weights on the device (several models: ``lanes.residency``); the
    seconds spent bringing them in go on the batch's jobs (``timings.swap_s``) and its outcome."""
    if lanes.residency is None:
        return run(*args)
    with lanes.residency() as swap_s:
        for job in batch:
            job.timings.swap_s = swap_s
        outcome = run(*args)
    outcome.swap_s = swap_s
    return outcome
