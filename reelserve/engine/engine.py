"""The engine: owns the queue loop and the pipeline; knows nothing of HTTP.

Data path: submit → scheduler placement (tier, deadline, rate limit) → result cache (a hit is stored
as a completed copy) → admission (circuit, queue length, load, deadline) → job store (durable) →
broker → batcher → runner (worker thread) → encoder (thread) → storage → job store → result cache →
events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from reelserve.cache.policy import CachePolicy
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.events import EventBus, queued_event, status_event
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.runner import BatchOutcome, PipelineRunner
from reelserve.engine.scheduler import Scheduler, SchedulingOptions
from reelserve.engine.service import Content, Variant
from reelserve.engine.storage_keys import job_prefix, thumbnail_key, video_key
from reelserve.engine.video_cache import VideoCache
from reelserve.jobs.base import Broker, JobStore
from reelserve.metrics import Metrics
from reelserve.schemas import (
    ErrorCode,
    EventType,
    Job,
    JobError,
    JobEvent,
    JobStatus,
    ModelLimits,
    ReelserveError,
    VideoCreateRequest,
    resolve_request,
)
from reelserve.storage.base import Storage
from reelserve.video import MP4_CONTENT_TYPE, THUMBNAIL_CONTENT_TYPE, encode_mp4, encode_thumbnail

log = logging.getLogger(__name__)

_PROGRESS_PERSIST_S = 0.5  # progress is written to the store at most this often per job
_RUNNING = frozenset({JobStatus.in_progress})
_QUEUED = frozenset({JobStatus.queued})


class Engine:
    """Implements ``VideoService`` for one served model.

    :param model_name: the name requests must use (or omit).
    :param limits: the model's constraints, used to validate requests.
    :param cache: finished results to hand out again; None runs every request.
    :param semantic: semantic matching on top of ``cache``.
    :param cache_policy: who may use the cache and under which key (needed for ``cache`` to be used).
    """

    def __init__(
        self,
        *,
        model_name: str,
        limits: ModelLimits,
        store: JobStore,
        broker: Broker,
        storage: Storage,
        metrics: Metrics,
        max_batch_size: int = 4,
        max_wait_s: float = 0.05,
        cache: ResultCache | None = None,
        semantic: SemanticCache | None = None,
        cache_policy: CachePolicy | None = None,
        scheduling: SchedulingOptions | None = None,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self.model_name = model_name
        self.notifier = notifier
        self.limits = limits
        self.runner: PipelineRunner | None = None
        self.store = store
        self.broker = broker
        self.storage = storage
        self.metrics = metrics
        self.bus = EventBus()
        self.video_cache = VideoCache(storage, metrics, cache, semantic, cache_policy)
        self.scheduler = Scheduler(
            broker, limits, metrics, scheduling or SchedulingOptions(), max_batch_size, max_wait_s
        )
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="reelserve-pipeline")
        self._encode_thread = ThreadPoolExecutor(1, thread_name_prefix="reelserve-encode")
        self._stop_requested: set[str] = set()  # read by the pipeline thread at step boundaries
        self._last_persist: dict[str, float] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._ready = False
        metrics.queue_depth.set_function(broker.depth)
        metrics.watch_jobs(lambda: {s.value: n for s, n in store.count_by_status().items()})

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Running batches, and not refusing work because the pipeline keeps failing."""
        return self._ready and self.scheduler.ready

    async def recover(self) -> int:
        """Re-queue what a previous run left unfinished; call once, before accepting requests.

        Returns how many jobs were re-queued."""
        self.scheduler.start(self._expire)  # jobs whose deadline passed while we were down fail at once
        requeued = 0
        for job in self.store.unfinished():
            if job.status is JobStatus.in_progress:
                job.status, job.progress = JobStatus.queued, 0
                if not self.store.save(job, expect=_RUNNING):
                    continue
            await self.scheduler.enqueue(job)
            requeued += 1
        if self.notifier is not None:
            self.notifier.resume()
        return requeued

    async def start(self, runner: PipelineRunner) -> None:
        """Start running batches with ``runner`` (a loaded, warmed-up pipeline).

        Requests are accepted and queued before this; ready means they are also being run."""
        self.runner = runner
        self._loop_task = asyncio.create_task(self._serve(), name="reelserve-engine")
        self._ready = True

    async def stop(self) -> None:
        """Stop taking batches and abandon the running one at its next step; its jobs stay
        in progress in the store and are re-queued by the next ``start``."""
        self._ready = False
        await self.scheduler.stop()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._finishing, return_exceptions=True)
        if self.notifier is not None:  # owed webhooks are resent by the next start (``resume``)
            await self.notifier.stop()
        self._pipeline_thread.shutdown(wait=True, cancel_futures=True)
        self._encode_thread.shutdown(wait=True)

    # -- the service ------------------------------------------------------------------------

    async def submit(self, request: VideoCreateRequest, tenant: str | None = None) -> Job:
        model = request.model or self.model_name
        if model != self.model_name:
            raise ReelserveError(
                ErrorCode.unknown_model,
                f"model '{model}' is not served here; this server serves '{self.model_name}'",
                param="model",
            )
        params = resolve_request(request, model, self.limits)
        if self.notifier is not None:
            await self.notifier.check(request, tenant)
        placement = self.scheduler.place(request, tenant)
        job = await self.video_cache.new_job(request, params, tenant)
        if not job.cached:  # a cached video is handed out even when the pipeline is refusing work
            self.scheduler.check_circuit()
            plan = self.scheduler.plan(params, placement)
            if plan.params != params:  # degraded: the video actually made may be cached already
                job = await self.video_cache.new_job(request, plan.params, tenant)
            job.deadline_at, job.estimated_completion_at = plan.deadline_at, plan.estimated_completion_at
            job.degraded, job.degraded_reason = plan.degraded or None, plan.degraded_reason
        job.priority, job.tenant = placement.tier.name, tenant
        if self.notifier is not None:
            self.notifier.attach(job, request)
        self.store.create(job)
        if job.cached:  # completed already: its only transition is None -> completed
            self.metrics.finished.labels(job.status.value).inc()
            self._publish_status(job)
            if self.notifier is not None:
                self.notifier.finished(job)
            return job
        self.scheduler.start(self._expire)
        await self.scheduler.enqueue(job)
        self.bus.publish(queued_event(job, self.broker.position(job.id)))
        return job

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise ReelserveError(ErrorCode.not_found, f"no video with id '{job_id}'", param="video_id")
        return job

    def list(self, limit: int, after: str | None) -> list[Job]:
        try:
            return self.store.list(limit, after)
        except KeyError:
            raise ReelserveError(ErrorCode.invalid_parameter, f"no video with id '{after}'", param="after") from None

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status.final:
            return job
        if job.status is JobStatus.in_progress:
            self._stop_requested.add(job_id)  # its row leaves its batch at the next step boundary
        self.scheduler.dequeue(job)
        job.status = JobStatus.cancelled
        job.completed_at = time.time()
        if not self.store.save(job, expect=(JobStatus.queued, JobStatus.in_progress)):
            return self.get(job_id)  # it finished first; nothing to cancel
        self._finished(job)
        return job

    async def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if not job.status.final:
            await self.cancel(job_id)
        await self.video_cache.drop_job(job_id)
        self.store.delete(job_id)
        self.storage.delete_prefix(job_prefix(job_id))

    async def wait(self, job_id: str, timeout: float) -> Job:
        async with self.bus.subscribe(job_id) as events:
            job = self.get(job_id)
            try:
                async with asyncio.timeout(timeout):
                    while not job.status.final:
                        event = await events.get()
                        if event.final:
                            job = self.get(job_id)
            except TimeoutError:
                job = self.get(job_id)
        return job

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        async with self.bus.subscribe(job_id) as events:
            job = self.get(job_id)
            snapshot = queued_event(job, self.broker.position(job.id)) if job.status is JobStatus.queued else status_event(job)
            yield snapshot
            while not snapshot.final:
                snapshot = await events.get()
                yield snapshot

    def content(self, job_id: str, variant: Variant) -> Content:
        job = self.get(job_id)
        if job.status is not JobStatus.completed:
            raise ReelserveError(
                ErrorCode.conflict, f"video '{job_id}' is {job.status.value}; content exists once completed"
            )
        if variant == "thumbnail":
            return Content(self.storage, job.thumbnail_key or thumbnail_key(job_id), THUMBNAIL_CONTENT_TYPE)
        return Content(self.storage, job.video_key or video_key(job_id), MP4_CONTENT_TYPE)

    def queue_depth(self) -> int:
        return self.broker.depth()

    # -- the loop ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        runner = self.runner
        assert runner is not None
        while True:
            batch = self._claim(await self.scheduler.next_batch())
            if not batch:
                continue
            self._publish_positions()
            started = time.perf_counter()
            self.metrics.batch_size.observe(len(batch))
            params = [(job.id, job.params) for job in batch]

            def on_step(ids: list[str], step: int, total: int) -> None:
                loop.call_soon_threadsafe(self._on_step, ids, step, total)

            try:
                outcome = await loop.run_in_executor(
                    self._pipeline_thread, runner.run, params, on_step, self._stop_requested.__contains__
                )
            except asyncio.CancelledError:
                # The thread runs on: have it drop every row at its next step boundary.
                self._stop_requested.update(job.id for job in batch)
                raise
            except Exception as exc:  # a broken batch fails its own jobs, never the engine
                log.exception("pipeline call failed for %s", [job.id for job in batch])
                self._forget(batch)
                self.scheduler.batch_done(batch, [], time.perf_counter() - started, failed=True, fit=None)
                self._fail(batch, JobError(code=ErrorCode.generation_failed, message=f"{type(exc).__name__}: {exc}"))
                continue
            self._forget(batch)
            self.metrics.inference.observe(outcome.inference_s)
            self.scheduler.batch_done(
                batch, outcome.calls, outcome.inference_s, failed=False, fit=outcome.fit_batch_size
            )
            for job_id, error in outcome.errors.items():  # rows that do not fit even alone
                self._fail([job for job in batch if job.id == job_id], error)
            self._finish_batch(batch, outcome)

    def _claim(self, job_ids: list[str]) -> list[Job]:
        now = time.time()
        waiting = []
        for job_id in job_ids:
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.queued:
                continue  # cancelled or deleted while it waited
            if self.scheduler.expired(job, now):
                self._fail_queued(job, "its deadline passed before it could start")
                continue
            waiting.append(job)
        if not waiting:
            return []
        finish_by = self.scheduler.batch_started(waiting[0].params, len(waiting))
        claimed = []
        write_s = self.scheduler.predict_finish(waiting[0].params)  # the rows' outputs are written one by one
        for position, job in enumerate(waiting, start=1):
            job.status, job.started_at, job.attempts = JobStatus.in_progress, now, job.attempts + 1
            job.timings.queue_s = now - job.created_at
            job.estimated_completion_at, job.batch_size = finish_by + position * write_s, len(waiting)
            if self.store.save(job, expect=_QUEUED):
                self.scheduler.claim(job, now)
                self.metrics.queue_wait.observe(job.timings.queue_s)
                self._publish_status(job)
                claimed.append(job)
        return claimed

    async def _expire(self, job_id: str) -> None:
        """A queued job's deadline passed: it is failed now and never runs."""
        job = self.store.get(job_id)
        if job is not None and job.status is JobStatus.queued and self.scheduler.dequeue(job):
            self._fail_queued(job, "its deadline passed while it was queued")

    def _fail_queued(self, job: Job, why: str) -> None:
        self.scheduler.dequeue(job)
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(code=ErrorCode.deadline_exceeded, message=f"deadline exceeded: {why}")
        if self.store.save(job, expect=_QUEUED):
            self.metrics.deadline_misses.labels(job.priority or "", "expired_in_queue").inc()
            self._finished(job)

    def _forget(self, batch: list[Job]) -> None:
        for job in batch:
            self._stop_requested.discard(job.id)
            self._last_persist.pop(job.id, None)

    def _finish_batch(self, batch: list[Job], outcome: BatchOutcome) -> None:
        for job in batch:
            frames = outcome.frames.get(job.id)
            if frames is None:
                continue  # stopped by a cancel, already recorded as cancelled
            job.timings.inference_s = outcome.inference_s
            task = asyncio.create_task(self._complete(job, frames))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _complete(self, job: Job, frames: object) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            written_s = await loop.run_in_executor(self._encode_thread, self._write_outputs, job, frames)
        except Exception as exc:
            log.exception("writing outputs failed for %s", job.id)
            self._fail([job], JobError(code=ErrorCode.internal_error, message=f"could not write video: {exc}"))
            return
        job.status, job.progress, job.completed_at = JobStatus.completed, 100, time.time()
        job.video_key, job.thumbnail_key = video_key(job.id), thumbnail_key(job.id)
        job.timings.encode_s = time.perf_counter() - started
        self.scheduler.outputs_written(job.params, written_s)
        job.timings.total_s = job.completed_at - job.created_at
        if not self.store.save(job, expect=_RUNNING):
            self.storage.delete_prefix(job_prefix(job.id))  # cancelled or deleted meanwhile
            return
        try:  # before the status event, so a caller who saw "completed" can already hit the cache
            await self.video_cache.remember(job)
        except Exception:
            log.exception("caching the result of %s failed; the job itself completed", job.id)
        self.metrics.end_to_end.observe(job.timings.total_s)
        self._finished(job)

    def _write_outputs(self, job: Job, frames: object) -> float:
        """Returns its own seconds (``encode_s`` also holds the wait for the encode thread)."""
        started = time.perf_counter()
        self.storage.put(video_key(job.id), encode_mp4(frames, job.params.fps))  # type: ignore[arg-type]
        self.storage.put(thumbnail_key(job.id), encode_thumbnail(frames[0]))  # type: ignore[index]
        return time.perf_counter() - started

    def _fail(self, jobs: list[Job], error: JobError) -> None:
        for job in jobs:
            job.status, job.error, job.completed_at = JobStatus.failed, error, time.time()
            if self.store.save(job, expect=_RUNNING):
                self._finished(job)

    def _finished(self, job: Job) -> None:
        """Every path to a final status ends here, once per job."""
        self.scheduler.finished(job)
        self.metrics.finished.labels(job.status.value).inc()
        self._publish_status(job)
        if self.notifier is not None:
            self.notifier.finished(job)

    def _on_step(self, job_ids: list[str], step: int, total: int) -> None:
        progress = min(99, step * 100 // total)  # 100 only once the video is stored
        now = time.monotonic()
        for job_id in job_ids:
            if job_id in self._stop_requested:
                continue
            if now - self._last_persist.get(job_id, 0.0) >= _PROGRESS_PERSIST_S or step == total:
                job = self.store.get(job_id)
                if job is not None and job.status is JobStatus.in_progress:
                    job.progress = progress
                    self.store.save(job, expect=_RUNNING)
                self._last_persist[job_id] = now
            self.bus.publish(
                JobEvent(
                    job_id=job_id,
                    type=EventType.progress,
                    status=JobStatus.in_progress,
                    progress=progress,
                    step=step,
                    total_steps=total,
                )
            )

    # -- events -----------------------------------------------------------------------------

    def _publish_status(self, job: Job) -> None:
        self.bus.publish(status_event(job))

    def _publish_positions(self) -> None:
        """Tell listeners of waiting jobs that the queue moved."""
        for job_id in self.bus.listening_jobs():
            position = self.broker.position(job_id)
            if position is not None:
                self.bus.publish(
                    JobEvent(job_id=job_id, type=EventType.queued, status=JobStatus.queued, queue_position=position)
                )


__all__ = ["Engine", "thumbnail_key", "video_key"]
