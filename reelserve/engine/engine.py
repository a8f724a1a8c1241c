"""The engine: the video service of one model; knows nothing of HTTP. Its batch loop
(``batch_loop.py``) consumes the queue; the finisher (``finisher.py``) records what each run made.

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
from typing import TYPE_CHECKING, Any

from reelserve.cache.policy import CachePolicy
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.batch_loop import BatchLoop
from reelserve.engine.events import EventBus, Events, queued_event, status_event
from reelserve.engine.finisher import RUNNING, JobFinisher, RunningJobs
from reelserve.engine.progress import StepProgress
from reelserve.engine.leases import LeaseKeeper
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.scheduler import Scheduler, SchedulingOptions
from reelserve.engine.service import Content, Variant
from reelserve.engine.storage_keys import job_prefix, thumbnail_key, video_key
from reelserve.engine.video_cache import VideoCache
from reelserve.jobs.base import Broker, JobStore
from reelserve.metrics import Metrics
from reelserve.schemas import (
    ErrorCode,
    GenerationParams,
    Job,
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

if TYPE_CHECKING:  # the runner imports torch; the API process never runs one
    from reelserve.engine.runner import PipelineRunner

log = logging.getLogger(__name__)

_EVENT_POLL_S = 2.0  # a listener re-reads the job this often: events are best-effort across processes
# Longest a draining worker waits to hand back what it read ahead. The hand-back is a courtesy: jobs
# it could not give back are still in the queue's pending list, and live workers reclaim them.
HAND_BACK_S = 10.0


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
        self._stop_requested: set[str] = set()  # read by the pipeline thread at step boundaries
        self.progress = StepProgress(store, self.bus, self._stop_requested, self.scheduler.shared_queue)
        self._loop_task: asyncio.Task[None] | None = None
        self._ready = False
        self.health: Callable[[], bool] = lambda: True
        self._jobs = RunningJobs()
        self.finisher = JobFinisher(
            store=store, broker=broker, storage=storage, metrics=metrics, stats=self.stats,
            scheduler=self.scheduler, video_cache=self.video_cache, bus=self.bus, notifier=notifier,
            running=self._jobs,
        )
        self.batches = BatchLoop(
            store=store, broker=broker, scheduler=self.scheduler, finisher=self.finisher, progress=self.progress,
            metrics=metrics, stats=self.stats, bus=self.bus, running=self._jobs,
            stop_requested=self._stop_requested, accelerations=self.accelerations,
        )
        self._leases = None
        if lease_interval_s is not None:
            self._leases = LeaseKeeper(
                broker, lease_interval_s, lambda: list(self._jobs.claimed), self.batches.drop_lost,
                self.batches.reclaimed.update, self.batches.give_up,
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
        self.scheduler.start(self.batches.expire)  # jobs whose deadline passed while we were down fail at once
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
        self._loop_task = asyncio.create_task(self.batches.run(runner), name="reelserve-engine")
        if self._leases is not None:
            self._lease_task = asyncio.create_task(self._leases.run(), name="reelserve-leases")
        self._ready = True

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown of a worker: take no more batches, let the running one finish (up to
        ``timeout`` seconds; past that ``stop`` abandons it and other workers reclaim its jobs), then
        hand back what was read ahead. Returns how many jobs were handed back."""
        self.batches.draining, self._ready = True, False
        if self._loop_task is not None:
            if not self.batches.inferring:  # waiting for work or gathering a batch: the batcher hands it back
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
        self.batches.shutdown()
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
        self.scheduler.start(self.batches.expire)
        try:
            await self.scheduler.enqueue(job)
        except Exception:  # not queued, so not accepted: take the record back if the store still answers
            self.store.delete(job.id)
            raise
        self.bus.publish(queued_event(job, await self.broker.position(job.id)))
        await self.batches.count_queue()
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
        await self.batches.count_queue()
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


__all__ = ["Engine", "thumbnail_key", "video_key"]
