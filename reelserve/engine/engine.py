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
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reelserve.cache.policy import CachePolicy
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.events import EventBus, Events, queued_event, status_event
from reelserve.engine.finisher import RETRY_S, RUNNING, JobFinisher, RunningJobs
from reelserve.engine.progress import StepProgress
from reelserve.engine.leases import LeaseKeeper
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.scheduler import Scheduler, SchedulingOptions
from reelserve.engine.service import Content, Variant
from reelserve.engine.storage_keys import job_prefix, thumbnail_key, video_key
from reelserve.engine.video_cache import VideoCache
from reelserve.jobs.base import Broker, JobStore
from reelserve.metrics import Metrics
from reelserve.schemas import (
    ErrorCode,
    EventType,
    GenerationParams,
    Job,
    JobError,
    JobEvent,
    JobStatus,
    ModelLimits,
    ReelserveError,
    VideoCreateRequest,
    resolve_request,
)
from reelserve.schemas.errors import job_not_found
from reelserve.schemas.model_info import ModelCard, model_object
from reelserve.stats import LocalStats, StatsRecorder, WorkerStatus
from reelserve.storage.base import Storage
from reelserve.video import MP4_CONTENT_TYPE, THUMBNAIL_CONTENT_TYPE

log = logging.getLogger(__name__)

_EVENT_POLL_S = 2.0  # a listener re-reads the job this often: events are best-effort across processes
# Longest a draining worker waits to hand back what it read ahead. The hand-back is a courtesy: jobs
# it could not give back are still in the queue's pending list, and live workers reclaim them.
HAND_BACK_S = 10.0
_QUEUED = frozenset({JobStatus.queued})
_UNFINISHED = frozenset({JobStatus.queued, JobStatus.in_progress})


class Engine:
    """Implements ``VideoService`` for one served model.

    :param model_name: the name requests must use (or omit).
    :param limits: the model's constraints, used to validate requests.
    :param cache: finished results to hand out again; None runs every request.
    :param semantic: semantic matching on top of ``cache``.
    :param cache_policy: who may use the cache and under which key (needed for ``cache`` to be used).
    :param bus: where job events go; in process by default, Redis pub/sub when processes share the queue.
    :param accelerations: the options in force (``AccelerationOptions.describe``), reported on jobs.
    :param job_warnings: what the served weights say of a request they may not follow (unknown words,
        an untrained clip shape); carried on the job.
    :param card: what the model can draw, for the model object.
    :param lease_interval_s: with a shared queue (``scheduling.shared_queue``), seconds between
        heartbeats of running jobs and reclaims of dead workers' jobs.
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
        bus: Events | None = None,
        lease_interval_s: float | None = None,
        accelerations: list[str] | None = None,
        stats: StatsRecorder | None = None,
        job_warnings: Callable[[GenerationParams], list[str]] | None = None,
        card: ModelCard | None = None,
    ) -> None:
        self.model_name = model_name
        self.job_warnings = job_warnings  # what the model says of a request it may not follow
        self.card = card
        self.accelerations = list(accelerations or [])
        self.notifier = notifier
        self.limits = limits
        self.runner: PipelineRunner | None = None
        self.store = store
        self.broker = broker
        self.storage = storage
        self.metrics = metrics
        self.stats: StatsRecorder = stats or LocalStats()
        self.bus: Events = bus or EventBus()
        self.video_cache = VideoCache(storage, metrics, cache, semantic, cache_policy)
        self.scheduler = Scheduler(
            broker, limits, metrics, scheduling or SchedulingOptions(), max_batch_size, max_wait_s
        )
        self.scheduler.final_among = self._final_among
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="reelserve-pipeline")
        self._stop_requested: set[str] = set()  # read by the pipeline thread at step boundaries
        self.progress = StepProgress(store, self.bus, self._stop_requested, self.scheduler.shared_queue)
        self._loop_task: asyncio.Task[None] | None = None
        self._ready = False
        self.health: Callable[[], bool] = lambda: True
        self._draining = False
        self._inferring = False  # the pipeline call of a batch is under way
        self._jobs = RunningJobs()
        # Shared queue: jobs taken over from a dead worker (they may be in progress in the store).
        self._reclaimed: set[str] = set()
        self.finisher = JobFinisher(
            store=store, broker=broker, storage=storage, metrics=metrics, stats=self.stats,
            scheduler=self.scheduler, video_cache=self.video_cache, bus=self.bus, notifier=notifier,
            running=self._jobs,
        )
        self._leases = None
        if lease_interval_s is not None:
            self._leases = LeaseKeeper(
                broker, lease_interval_s, lambda: list(self._jobs.claimed), self._drop_lost,
                self._reclaimed.update, self._give_up,
            )
        self._lease_task: asyncio.Task[None] | None = None
        metrics.watch_jobs(lambda: {s.value: n for s, n in store.count_by_status().items()})

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Running batches (or, API only, accepting them), not refusing work because the pipeline
        keeps failing, and ``health`` says the backing services answer."""
        return self._ready and self.scheduler.ready and self.health()

    async def open(self) -> None:
        """Accept jobs for other processes to run (the distributed API); no pipeline here."""
        self._ready = True

    async def recover(self) -> int:
        """Re-queue what a previous run left unfinished; call once, before accepting requests.

        Returns how many jobs were re-queued."""
        self.scheduler.start(self._expire)  # jobs whose deadline passed while we were down fail at once
        requeued = 0
        for job in self.store.unfinished():
            if self.scheduler.shared_queue:
                # Running jobs belong to live workers, or are reclaimed from dead ones; a queued job
                # lacks its entry only if the API lost Redis between writing it and queueing it.
                if job.status is JobStatus.queued:
                    await self.broker.put(job.id, job.params.batch_key(), self.scheduler.level_of(job))
                    requeued += 1
                continue
            if job.status is JobStatus.in_progress:
                job.status, job.progress = JobStatus.queued, 0
                if not self.store.save(job, expect=RUNNING):
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
        if self._leases is not None:
            self._lease_task = asyncio.create_task(self._leases.run(), name="reelserve-leases")
        self._ready = True

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown of a worker: take no more batches, let the running one finish (up to
        ``timeout`` seconds; past that ``stop`` abandons it and other workers reclaim its jobs), then
        hand back what was read ahead. Returns how many jobs were handed back."""
        self._draining, self._ready = True, False
        if self._loop_task is not None:
            if not self._inferring:  # waiting for work or gathering a batch: the batcher hands it back
                self._loop_task.cancel()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(self._loop_task, return_exceptions=True)
            except TimeoutError:
                log.warning("the running batch did not finish within %.0fs; abandoning it", timeout)
        await self.finisher.wait()
        try:
            async with asyncio.timeout(HAND_BACK_S):
                return await self.broker.release()
        except TimeoutError:
            log.warning("handing back read-ahead jobs took over %.0fs; other workers will reclaim them", HAND_BACK_S)
            return 0

    async def stop(self) -> None:
        """Stop taking batches and abandon the running one at its next step; its jobs stay
        in progress in the store and are re-queued by the next ``start``."""
        self._ready = False
        await self.scheduler.stop()
        for task in (self._loop_task, self._lease_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.finisher.wait()
        if self.notifier is not None:  # owed webhooks are resent by the next start (``resume``)
            await self.notifier.stop()
        self._pipeline_thread.shutdown(wait=True, cancel_futures=True)
        self.finisher.shutdown()

    # -- the service ------------------------------------------------------------------------

    async def submit(self, request: VideoCreateRequest, tenant: str | None = None) -> Job:
        model = request.model or self.model_name
        if model != self.model_name:
            raise ReelserveError(
                ErrorCode.unknown_model,
                f"model: '{model}' is not served here; this server serves '{self.model_name}' (send that, or leave model out)",
                param="model",
            )
        params = resolve_request(request, model, self.limits)
        if self.notifier is not None:
            await self.notifier.check(request, tenant)
        placement = self.scheduler.place(request, tenant)
        job = await self.video_cache.new_job(request, params, tenant)
        if not job.cached:  # a cached video is handed out even when the pipeline is refusing work
            self.scheduler.check_circuit()
            self.scheduler.check_share(tenant, placement)
            await self.scheduler.refresh_depth()
            plan = self.scheduler.plan(params, placement)
            if plan.params != params:  # degraded: the video actually made may be cached already
                job = await self.video_cache.new_job(request, plan.params, tenant)
            job.deadline_at, job.estimated_completion_at = plan.deadline_at, plan.estimated_completion_at
            job.degraded, job.degraded_reason = plan.degraded or None, plan.degraded_reason
        job.priority, job.tenant = placement.tier.name, tenant
        job.accelerations = list(self.accelerations)
        job.warnings = self.job_warnings(params) if self.job_warnings else []
        if self.notifier is not None:
            self.notifier.attach(job, request)
        self.store.create(job)
        if job.cached:  # completed already: its only transition is None -> completed
            self.finisher.announce(job)
            return job
        self.scheduler.start(self._expire)
        try:
            await self.scheduler.enqueue(job)
        except Exception:  # not queued, so not accepted: take the record back if the store still answers
            self.store.delete(job.id)
            raise
        self.bus.publish(queued_event(job, await self.broker.position(job.id)))
        await self._count_queue()
        return job

    def _final_among(self, job_ids: list[str]) -> set[str]:
        """The ids whose jobs are final (or gone): what workers finished unseen by this process."""
        final = set()
        for job_id in job_ids:
            job = self.store.get(job_id)
            if job is None or job.status.final:
                final.add(job_id)
        return final

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    def list(self, limit: int, after: str | None, tenant: str | None = None) -> list[Job]:
        try:
            return self.store.list(limit, after) if tenant is None else self.store.list_for_tenant(tenant, limit, after)
        except KeyError:
            raise ReelserveError(ErrorCode.invalid_parameter, f"no video with id '{after}'", param="after") from None

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status.final:
            return job
        if job.status is JobStatus.in_progress:
            self._stop_requested.add(job_id)  # its row leaves its batch at the next step boundary
        await self.scheduler.dequeue(job)
        await self._count_queue()
        job.status = JobStatus.cancelled
        job.completed_at = time.time()
        if not self.store.save(job, expect=(JobStatus.queued, JobStatus.in_progress)):
            return self.get(job_id)  # it finished first; nothing to cancel
        self.finisher.finished(job)
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
                        try:
                            async with asyncio.timeout(_EVENT_POLL_S):
                                while not (await events.get()).final:
                                    pass
                        except TimeoutError:
                            pass  # no final event: look at the record anyway (an event may be lost)
                        job = self.get(job_id)
            except TimeoutError:
                job = self.get(job_id)
        return job

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        async with self.bus.subscribe(job_id) as events:
            snapshot = await self._snapshot(self.get(job_id))
            yield snapshot
            while not snapshot.final:
                try:
                    async with asyncio.timeout(_EVENT_POLL_S):
                        event = await events.get()
                except TimeoutError:  # quiet: the record (and queue position) may have moved on
                    event = await self._snapshot(self.get(job_id))
                    if event.status == snapshot.status and event.queue_position == snapshot.queue_position:
                        continue
                snapshot = event
                yield snapshot

    async def _snapshot(self, job: Job) -> JobEvent:
        if job.status is JobStatus.queued:
            return queued_event(job, await self.broker.position(job.id))
        return status_event(job)

    def content(self, job_id: str, variant: Variant) -> Content:
        job = self.get(job_id)
        if job.status is not JobStatus.completed:
            raise ReelserveError(
                ErrorCode.conflict, f"video '{job_id}' is {job.status.value}; content exists once completed"
            )
        if variant == "thumbnail":
            return Content(self.storage, job.thumbnail_key or thumbnail_key(job_id), THUMBNAIL_CONTENT_TYPE)
        return Content(self.storage, job.video_key or video_key(job_id), MP4_CONTENT_TYPE)

    async def queue_depth(self) -> int:
        return await self.broker.depth()

    def worker_status(self, name: str) -> WorkerStatus:
        """This process as a worker on the dashboard."""
        state = "loading" if self.runner is None else "busy" if self._jobs.claimed else "idle"
        return WorkerStatus(name=name, model=self.model_name, state=state, running=len(self._jobs.claimed))

    def model_info(self) -> dict[str, Any]:
        tiers = self.scheduler.tiers
        return model_object(
            self.model_name, self.limits, self.accelerations, list(tiers.tiers), tiers.default_tier, self.card
        )

    async def _count_queue(self) -> None:
        self.metrics.queue_depth.set(await self.broker.depth())

    # -- the loop ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        runner = self.runner
        assert runner is not None
        while not self._draining:
            try:
                job_ids = await self.scheduler.next_batch()
            except Exception as exc:  # noqa: BLE001 - the shared queue is unreachable: wait for it, lose nothing
                log.warning("taking work failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            try:
                batch = await self._claim(job_ids)
                await self._count_queue()
            except Exception as exc:  # noqa: BLE001 - the store or queue is unreachable; the batch is kept
                log.warning("claiming %s failed (%s: %s); retrying", job_ids, type(exc).__name__, exc)
                self._reclaimed.update(job_ids)  # some may be in progress already, by this worker
                await self.scheduler.hand_back(job_ids)
                await asyncio.sleep(RETRY_S)
                continue
            if not batch:
                continue
            self._jobs.claimed.update(job.id for job in batch)
            await self._publish_positions()
            started = time.perf_counter()
            self.metrics.batch_size.observe(len(batch))
            self.stats.batch_ran(len(batch))
            params = [(job.id, job.params) for job in batch]

            def on_step(ids: list[str], step: int, total: int) -> None:
                loop.call_soon_threadsafe(self.progress.on_step, ids, step, total)

            self._inferring = True
            try:
                outcome = await loop.run_in_executor(
                    self._pipeline_thread, runner.run, params, on_step, self._stop_requested.__contains__
                )
            except asyncio.CancelledError:
                # The thread runs on: have it drop every row at its next step boundary.
                self._stop_requested.update(job.id for job in batch)
                raise
            except Exception as exc:  # a broken batch fails its own jobs, never the engine
                self._inferring = False
                log.exception("pipeline call failed for %s", [job.id for job in batch])
                self._forget(batch)
                self.scheduler.batch_done(batch, [], time.perf_counter() - started, failed=True, fit=None)
                self.finisher.fail(batch, JobError(code=ErrorCode.generation_failed, message=f"{type(exc).__name__}: {exc}"))
                continue
            self._inferring = False
            self._forget(batch)
            self.metrics.inference.observe(outcome.inference_s)
            self.scheduler.batch_done(
                batch, outcome.calls, outcome.inference_s, failed=False, fit=outcome.fit_batch_size
            )
            for job_id, error in outcome.errors.items():  # rows that do not fit even alone
                self.finisher.fail([job for job in batch if job.id == job_id], error)
            self.finisher.complete_batch(batch, outcome)

    async def _claim(self, job_ids: list[str]) -> list[Job]:
        now = time.time()
        waiting = []
        for job_id in job_ids:
            job = self.store.get(job_id)
            reclaimed = job_id in self._reclaimed
            self._reclaimed.discard(job_id)
            if job is None or job.status.final:  # cancelled or deleted while it waited, or done elsewhere
                await self.broker.ack(job_id)
                continue
            if job.status is JobStatus.in_progress and not reclaimed:
                continue  # a duplicate entry of a job running elsewhere; that run acks it
            if job.status is JobStatus.queued and self.scheduler.expired(job, now):
                await self._fail_queued(job, "its deadline passed before it could start")
                continue
            waiting.append(job)
        if not waiting:
            return []
        finish_by = self.scheduler.batch_started(waiting[0].params, len(waiting))
        claimed = []
        write_s = self.scheduler.predict_finish(waiting[0].params)  # the rows' outputs are written one by one
        for position, job in enumerate(waiting, start=1):
            expect = _UNFINISHED if job.status is JobStatus.in_progress else _QUEUED  # reclaimed: was running
            job.status, job.started_at, job.attempts = JobStatus.in_progress, now, job.attempts + 1
            job.accelerations = list(self.accelerations)  # what this process really runs with
            job.timings.queue_s = now - job.created_at
            job.estimated_completion_at, job.batch_size = finish_by + position * write_s, len(waiting)
            if self.store.save(job, expect=expect):
                self.scheduler.claim(job, now)
                self.metrics.queue_wait.observe(job.timings.queue_s)
                self._publish_status(job)
                claimed.append(job)
        return claimed

    async def _expire(self, job_id: str) -> None:
        """A queued job's deadline passed: it is failed now and never runs."""
        job = self.store.get(job_id)
        if job is not None and job.status is JobStatus.queued and await self.scheduler.dequeue(job):
            await self._fail_queued(job, "its deadline passed while it was queued")

    async def _fail_queued(self, job: Job, why: str) -> None:
        await self.scheduler.dequeue(job)
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(code=ErrorCode.deadline_exceeded, message=f"deadline exceeded: {why}")
        if self.store.save(job, expect=_QUEUED):
            self.metrics.deadline_misses.labels(job.priority or "", "expired_in_queue").inc()
            self.finisher.finished(job)

    def _forget(self, batch: list[Job]) -> None:
        for job in batch:
            self._stop_requested.discard(job.id)
            self.progress.forget(job.id)
            self._jobs.lost.discard(job.id)

    def _drop_lost(self, job_ids: list[str]) -> None:
        """Another worker took these over (this one stalled): stop them here; that worker finishes them."""
        running = [job_id for job_id in job_ids if job_id in self._jobs.claimed]
        self._jobs.lost.update(running)
        self._stop_requested.update(running)

    def _give_up(self, job_id: str) -> None:
        """Delivered to workers too often (each one died or stalled with it): fail it for good."""
        job = self.store.get(job_id)
        if job is None or job.status.final:
            return
        job.status, job.completed_at = JobStatus.failed, time.time()
        job.error = JobError(
            code=ErrorCode.worker_lost,
            message=f"the workers running this job were lost {job.attempts} times; it was given up on",
        )
        if self.store.save(job, expect=_UNFINISHED):
            self.finisher.finished(job)

    # -- events -----------------------------------------------------------------------------

    def _publish_status(self, job: Job) -> None:
        self.bus.publish(status_event(job))

    async def _publish_positions(self) -> None:
        """Tell listeners of waiting jobs that the queue moved."""
        for job_id in self.bus.listening_jobs():
            position = await self.broker.position(job_id)
            if position is not None:
                self.bus.publish(
                    JobEvent(job_id=job_id, type=EventType.queued, status=JobStatus.queued, queue_position=position)
                )


__all__ = ["Engine", "thumbnail_key", "video_key"]
