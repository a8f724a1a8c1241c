"""Every path by which a job reaches its final state: completed (outputs written, cached), failed,
cancelled, expired in the queue, given up on, or a cache hit born completed. Each saves the final
record by compare-and-set, acknowledges the queue entry and tells everyone (metrics, stats, log,
events, webhook) here, once per job; the front (cancel, expiry, cache hit) and the worker (batch
outcomes) only decide which transition it is.

The batch loop hands each row here as it finishes and the batch goes on; the writing runs on its own
thread (or a CPU lane's, which writes its own) and the bookkeeping as tasks, which ``wait`` lets
shutdown finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from reelserve.engine.events import Events, status_event
from reelserve.engine.job_log import log_final
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.scheduler import Scheduler
from reelserve.engine.storage_keys import latents_key, thumbnail_key, video_key
from reelserve.engine.video_cache import VideoCache
from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.base import Broker
from reelserve.metrics import Metrics
from reelserve.schemas import ErrorCode, Job, JobError, JobStatus
from reelserve.stats import StatsRecorder
from reelserve.storage.base import Storage
from reelserve.video import encode_mp4

log = logging.getLogger(__name__)

RETRY_S = 1.0  # pause before retrying after the job store or queue failed
RUNNING = frozenset({JobStatus.in_progress})
QUEUED = frozenset({JobStatus.queued})
UNFINISHED = frozenset({JobStatus.queued, JobStatus.in_progress})


@dataclass
class Written:
    """A job's outputs written and its completed record saved, both on the thread that wrote them:
    the save needs no trip through the event loop and the store's thread (about 1 ms of a lone
    request; docs/benchmarks.md). A job whose result goes into the cache is saved by the loop
    instead, after the cache holds it: whoever sees it completed can already hit it."""

    job: Job  # the completed job as saved: a copy, so the loop's own object is not changed off the loop
    seconds: float  # the writes' own time
    saved: bool | None  # False: another transition got there first; None: not saved yet (the loop saves it)


@dataclass
class RunningJobs:
    """The jobs claimed by this process and not final yet (outputs being written too), and those
    among them another worker took over after this one stalled (that worker finishes them)."""

    claimed: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)


class JobFinisher:
    """Takes a claimed job to its final state, exactly once (the store's compare-and-set decides
    which process and which run of a job gets there)."""

    def __init__(self, *, store: AsyncJobStore, broker: Broker, storage: Storage, metrics: Metrics,
                 stats: StatsRecorder, scheduler: Scheduler, video_cache: VideoCache, bus: Events,
                 notifier: WebhookNotifier | None, running: RunningJobs, keep_latents_s: float = 0.0) -> None:
        self.store, self.broker, self.storage = store, broker, storage
        self.keep_latents_s = keep_latents_s  # a completed job's final latents stay this long (``expires_at``)
        self.metrics, self.stats, self.scheduler = metrics, stats, scheduler
        self.video_cache, self.bus, self.notifier = video_cache, bus, notifier
        self.running = running
        self._encode_thread = ThreadPoolExecutor(1, thread_name_prefix="reelserve-encode")
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait(self) -> None:
        """Until every result and failure handed over so far is recorded."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def shutdown(self) -> None:
        self._encode_thread.shutdown(wait=True)

    def write_row(self, job: Job, frames: object, inference_s: float) -> None:
        """Write a finished row's video on the finisher's own encode thread, and finish its job."""
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._encode_thread, self.write_and_record, job, frames, inference_s,
                                     time.perf_counter())
        self._spawn(self._complete(job, write))

    def take_written(self, job: Job, written: Future[Written]) -> None:
        """Finish a job whose video is being written elsewhere (a CPU lane writes its own)."""
        self._spawn(self._complete(job, asyncio.wrap_future(written)))

    def release_unfinished(self, jobs: list[Job]) -> None:
        """A batch's jobs that ended without a video: stopped by a cancel (already recorded), taken
        over by another worker, or failed (recorded apart)."""
        for job in jobs:
            self.running.claimed.discard(job.id)

    def fail(self, jobs: list[Job], error: JobError) -> None:
        for job in jobs:
            job.status, job.error, job.completed_at = JobStatus.failed, error, time.time()
            self._spawn(self._record_failure(job))

    async def settle(self, job: Job, expect: frozenset[JobStatus]) -> bool:
        """Save ``job``'s final state if its stored status is one of ``expect`` (compare-and-set), and
        then finish it. False: another transition got there first, and nothing was changed."""
        if not await self.store.save(job, expect=expect):
            return False
        self.finished(job)
        return True

    async def cancel(self, job: Job) -> bool:
        """A queued or running job the caller cancelled (already out of the queue)."""
        job.status, job.completed_at = JobStatus.cancelled, time.time()
        return await self.settle(job, UNFINISHED)

    async def expire(self, job: Job, why: str) -> None:
        """A queued job whose deadline passed: it never runs."""
        await self.scheduler.dequeue(job)
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(code=ErrorCode.deadline_exceeded, message=f"deadline exceeded: {why}")
        if await self.settle(job, QUEUED):
            self.metrics.deadline_misses.labels(job.priority or "", "expired_in_queue").inc()

    async def unserved(self, job: Job, why: str) -> None:
        """An unfinished job for a model its server no longer serves (found at a restart)."""
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(code=ErrorCode.unknown_model, message=why)
        await self.settle(job, UNFINISHED)

    async def give_up(self, job: Job) -> None:
        """A job delivered to workers too often (each one died or stalled with it)."""
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(
            code=ErrorCode.worker_lost,
            message=f"the workers running this job were lost {job.attempts} times; it was given up on",
        )
        await self.settle(job, UNFINISHED)

    def finished(self, job: Job) -> None:
        """Every path to a final status ends here, once per job."""
        self._spawn(self._ack(job.id))  # a shared queue forgets the job only now
        self.scheduler.finished(job)
        self.announce(job)

    def announce(self, job: Job) -> None:
        """Count, log and publish a final job, and owe its webhook. Alone, for a cache hit: it was
        created completed, so it has no queue entry and no earlier state to compare against."""
        self.metrics.finished.labels(job.status.value).inc()
        self.stats.job_finished(job)
        log_final(job)
        self.bus.publish(status_event(job))
        if self.notifier is not None:
            self.notifier.finished(job)

    def _spawn(self, work: object) -> None:
        task = asyncio.create_task(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, job: Job, write: asyncio.Future[Written]) -> None:
        try:
            await self._store_result(job, write)
        finally:
            self.running.claimed.discard(job.id)

    async def _store_result(self, job: Job, write: asyncio.Future[Written]) -> None:
        try:
            written = await write
        except Exception as exc:
            log.exception("writing outputs failed for %s", job.id)
            self.fail([job], JobError(code=ErrorCode.internal_error, message=f"could not write video: {exc}"))
            return
        self.scheduler.outputs_written(job.params, written.seconds)
        job, saved = written.job, written.saved
        if saved is None:
            await self._remember(job)  # before the record: whoever sees "completed" can hit the cache
            saved = await self._save_final(job)
        if not saved:
            # Cancelled or deleted meanwhile, or finished by another worker's run of it: that run's
            # files (another attempt's keys) stay; this one's go, and its cache entry before them.
            await self._forget(job)
            await asyncio.to_thread(self._delete_outputs, job)
            if job.id not in self.running.lost:
                await self.broker.ack(job.id)
            return
        if job.expires_at is not None:
            self._drop_latents_at(job)
        self.metrics.end_to_end.observe(job.timings.total_s)
        self.finished(job)

    async def _remember(self, job: Job) -> None:
        try:
            await self.video_cache.remember(job)
        except Exception:
            log.exception("caching the result of %s failed; the job itself completes", job.id)

    async def _forget(self, job: Job) -> None:
        try:
            await self.video_cache.forget(job)
        except Exception:  # a lookup of it then finds its files gone: a miss, and the job runs
            log.exception("taking back the cache entry of %s failed", job.id)

    def _drop_latents_at(self, job: Job) -> None:
        """The kept final latents go at the job's ``expires_at`` (best effort: a process stopped before
        then leaves them until the job is deleted; a remix never reads them after it either way)."""
        assert job.expires_at is not None

        def drop() -> None:
            self._spawn(asyncio.to_thread(self.storage.delete_prefix, latents_key(job.id)))

        asyncio.get_running_loop().call_later(max(0.0, job.expires_at - time.time()), drop)

    def write_and_record(self, job: Job, frames: object, inference_s: float, queued_at: float | None = None) -> Written:
        """Write ``job``'s video from ``frames`` and save its completed record (compare-and-set on
        ``in_progress``), on the calling thread. ``queued_at``: ``perf_counter`` when the write was
        queued (``encode_s`` holds the wait for the writer too; None: now). A failed write raises; a
        failed save, or one left to the loop (a result to cache first), is ``saved=None``."""
        queued_at = time.perf_counter() if queued_at is None else queued_at
        seconds = self.write_outputs(job, frames)
        done = job.model_copy(deep=True)
        done.status, done.progress, done.completed_at = JobStatus.completed, 100, time.time()
        done.video_key, done.thumbnail_key = video_key(job.id, job.attempts), thumbnail_key(job.id, job.attempts)
        done.timings.inference_s, done.timings.encode_s = inference_s, time.perf_counter() - queued_at
        done.timings.total_s = done.completed_at - done.created_at
        if self.keep_latents_s > 0:  # the runner kept them (``row_inputs``): remixes start from them until then
            done.expires_at = done.completed_at + self.keep_latents_s
        if self.video_cache.keeps(done):  # the loop caches it first, then saves it
            return Written(done, seconds, None)
        try:
            saved: bool | None = self.store.sync.save(done, expect=RUNNING)
        except Exception as exc:  # noqa: BLE001 - the loop retries until the store answers
            log.warning("saving %s failed (%s: %s); retrying from the loop", job.id, type(exc).__name__, exc)
            saved = None
        return Written(done, seconds, saved)

    def write_outputs(self, job: Job, frames: object) -> float:
        """The MP4, on disk before the job may complete; its thumbnail is made when first asked for
        (``engine/thumbnails.py``). Returns its own seconds (``encode_s`` also holds the wait for
        the encode thread). Keys are per attempt, so two runs of a job (one reclaimed from a
        stalled worker) never share a file."""
        started = time.perf_counter()
        self.storage.put(video_key(job.id, job.attempts), encode_mp4(frames, job.params.fps))  # type: ignore[arg-type]
        return time.perf_counter() - started

    def _delete_outputs(self, job: Job) -> None:
        for key in (video_key(job.id, job.attempts), thumbnail_key(job.id, job.attempts)):
            self.storage.delete_prefix(key)  # a whole key: just that blob

    async def _record_failure(self, job: Job) -> None:
        try:
            if await self._save_final(job):
                self.finished(job)
        finally:
            self.running.claimed.discard(job.id)

    async def _save_final(self, job: Job) -> bool:
        """Save a running job's final state, retrying while the store is unreachable: the run is
        done, and giving up would leave it in progress for good (its entry kept alive here)."""
        delay = RETRY_S
        while True:
            try:
                return await self.store.save(job, expect=RUNNING)
            except Exception as exc:  # noqa: BLE001 - any store failure: the result must not be dropped
                log.warning("saving %s failed (%s: %s); retrying in %.0fs", job.id, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _ack(self, job_id: str) -> None:
        try:
            await self.broker.ack(job_id)
        except Exception:  # left pending: a worker reclaims it later, sees it final, and acks it then
            log.exception("could not acknowledge %s", job_id)
