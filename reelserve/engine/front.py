"""The front of the video service: validate, place, look up the result cache, admit, store,
enqueue, answer queries and stream events. It runs no model: the distributed ``reelserve api`` is a
front alone; the embedded server and a worker add a ``Worker`` to it (``engine.py``).

Data path: submit → scheduler placement (tier, deadline, rate limit) → result cache (a hit is stored
as a completed copy) → admission (circuit, queue length, load, deadline) → job store (durable) →
broker; then, in whichever process runs the model, the worker: batcher → runner (worker thread) →
encoder (thread) → storage → job store → result cache → events. Every final transition, here or in
the worker, goes through the one ``JobFinisher``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from reelserve.adapters import AdapterRegistry
from reelserve.cache.policy import CachePolicy
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.events import EventBus, Events, queued_event, status_event
from reelserve.engine.finisher import JobFinisher, RunningJobs
from reelserve.engine.recovery import recover_jobs
from reelserve.engine.job_inputs import StagedInputs
from reelserve.engine.request_resolution import RequestResolver
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.scheduler import Scheduler, SchedulingOptions
from reelserve.engine.service import Content, Variant
from reelserve.engine.storage_keys import job_prefix, preview_key, thumbnail_key, video_key
from reelserve.engine.thumbnails import ensure_thumbnail
from reelserve.engine.video_cache import VideoCache
from reelserve.jobs.async_store import AsyncJobStore
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
)
from reelserve.schemas.errors import job_not_found
from reelserve.schemas.model_info import ModelCard, model_object
from reelserve.schemas.inputs import Uploads
from reelserve.schemas.requests import VideoRemixRequest
from reelserve.stats import LocalStats, StatsRecorder
from reelserve.storage.base import Storage
from reelserve.video import MP4_CONTENT_TYPE, THUMBNAIL_CONTENT_TYPE

log = logging.getLogger(__name__)

_EVENT_POLL_S = 2.0  # a listener re-reads the job this often: events are best-effort across processes



class VideoFront:
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
    :param keep_latents_s: how long a completed job's final latents are kept for remixes (its
        ``expires_at``); the runner writes them when its settings say so.
    :param adapters: the LoRA adapters requests may name (``loras``); None: the server takes none.
    :param stop_requested: shared with a worker in this process, whose pipeline thread drops a
        cancelled job's row at its next step (a worker elsewhere notices the cancel in the store).
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
        max_wait_s: float | None = 0.05,
        cache: ResultCache | None = None,
        semantic: SemanticCache | None = None,
        cache_policy: CachePolicy | None = None,
        scheduling: SchedulingOptions | None = None,
        notifier: WebhookNotifier | None = None,
        bus: Events | None = None,
        accelerations: list[str] | None = None,
        stats: StatsRecorder | None = None,
        job_warnings: Callable[[GenerationParams], list[str]] | None = None,
        card: ModelCard | None = None,
        stop_requested: set[str] | None = None,
        keep_latents_s: float = 0.0,
        adapters: AdapterRegistry | None = None,
    ) -> None:
        self.model_name, self.limits, self.card = model_name, limits, card
        # What the server's workers do between steps ({"continuous_batching", "preemption"}), shown on
        # the model object so a load probe can say what it measured; set by the server.
        self.step_scheduling: dict[str, bool] | None = None
        self.job_warnings = job_warnings  # what the model says of a request it may not follow
        self.adapters = adapters  # the LoRA adapters requests may name; None: none
        self.resolver = RequestResolver(model_name, limits, storage, adapters)
        self.accelerations = list(accelerations or [])
        self.store, self.broker, self.storage, self.metrics = store, broker, storage, metrics
        self.notifier = notifier
        self.stats: StatsRecorder = stats or LocalStats()
        self.bus: Events = bus or EventBus()
        self.video_cache = VideoCache(storage, metrics, cache, semantic, cache_policy)
        self.scheduler = Scheduler(
            broker, limits, metrics, scheduling or SchedulingOptions(), max_batch_size, max_wait_s
        )
        self.scheduler.final_among = self._final_among
        self.stop_requested = stop_requested if stop_requested is not None else set()
        self.running = RunningJobs()  # claimed by a worker in this process; none without one
        self.jobs = AsyncJobStore(store)  # every store call on the loop goes through it, off the loop
        self.finisher = JobFinisher(
            store=self.jobs, broker=broker, storage=storage, metrics=metrics, stats=self.stats,
            scheduler=self.scheduler, video_cache=self.video_cache, bus=self.bus, notifier=notifier,
            running=self.running, keep_latents_s=keep_latents_s,
        )
        self._ready = False
        # Every model this server serves, the default first (several behind one server: each engine
        # re-queues its own model's jobs, and the server resumes webhooks once).
        self.served_models: tuple[str, ...] = (model_name,)
        self.health: Callable[[], bool] = lambda: True
        metrics.watch_jobs(lambda: {s.value: n for s, n in store.count_by_status().items()})

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Accepting jobs (and, with a worker, running them), not refusing work because the pipeline
        keeps failing, and ``health`` says the backing services answer."""
        return self._ready and self.scheduler.ready and self.health()

    @property
    def accepting(self) -> bool:
        """Loaded (or, for the API, open): taking jobs, whatever the circuit says."""
        return self._ready

    async def open(self) -> None:
        """Accept jobs for other processes to run (the distributed API)."""
        self._ready = True

    async def recover(self) -> int:
        """Re-queue what a previous run left unfinished (``recovery.py``); call once, before accepting
        requests. Returns how many jobs were re-queued."""
        self.scheduler.start(self.expire)  # jobs whose deadline passed while we were down fail at once
        requeued = await recover_jobs(self)
        if self.notifier is not None and len(self.served_models) == 1:
            await self.notifier.resume()
        return requeued

    async def stop(self) -> None:
        """Stop failing expired jobs, finish recording what was handed to the finisher, and stop
        sending webhooks (owed ones are resent by the next start: ``resume``)."""
        self._ready = False
        await self.scheduler.stop()
        await self.finisher.wait()
        if self.notifier is not None:
            await self.notifier.stop()
        self.finisher.shutdown()
        self.jobs.close()

    # -- the service ------------------------------------------------------------------------

    async def submit(self, request: VideoCreateRequest, tenant: str | None = None, awaited: bool = False,
                     uploads: Uploads | None = None) -> Job:
        params, staged = await self.resolver.create(request, uploads or Uploads(), tenant)
        return await self._accept(request, params, staged, tenant, awaited)

    async def remix(self, video_id: str, body: VideoRemixRequest, tenant: str | None = None) -> Job:
        """A new job that re-draws finished video ``video_id`` with a new prompt (SDEdit from its final
        latents, or from its MP4 once they expired); the caller may see the source (``JobAccess``)."""
        source = await self.get(video_id)
        request, params, staged = await self.resolver.remix(source, body)
        return await self._accept(request, params, staged, tenant, awaited=False, remixed_from=source.id)

    async def _accept(self, request: VideoCreateRequest, params: GenerationParams, staged: StagedInputs,
                      tenant: str | None, awaited: bool, remixed_from: str | None = None) -> Job:
        """Place, look up, admit, store and queue a resolved request (``submit`` and ``remix``)."""
        if self.notifier is not None:
            await self.notifier.check(request, tenant)
        await self.scheduler.reconcile(tenant)
        placement = self.scheduler.place(request, tenant)
        job = await self.video_cache.new_job(request, params, tenant)
        if not job.cached:  # a cached video is handed out even when the pipeline is refusing work
            self.scheduler.check_circuit()
            await self.scheduler.reconcile(tenant, placement.tier)
            self.scheduler.check_share(tenant, placement)
            await self.scheduler.refresh_depth()
            plan = self.scheduler.plan(params, placement)
            if plan.params != params:  # degraded: the video actually made may be cached already
                job = await self.video_cache.new_job(request, plan.params, tenant)
            job.deadline_at, job.estimated_completion_at = plan.deadline_at, plan.estimated_completion_at
            job.degraded, job.degraded_reason = plan.degraded or None, plan.degraded_reason
        job.priority, job.tenant, job.remixed_from_video_id = placement.tier.name, tenant, remixed_from
        job.accelerations = list(self.accelerations)
        job.warnings = self.job_warnings(params) if self.job_warnings else []
        if self.notifier is not None:
            self.notifier.attach(job, request)
        if staged and not job.cached:  # where the worker reads them; before the job can be claimed
            await asyncio.to_thread(staged.store, self.storage, job.id)
        # Awaited: the client learns the id from ``wait``, which makes the record durable first if
        # the job is unfinished then; a final state is durable anyway (docs/architecture.md).
        try:
            await self.jobs.create(job, durable=not awaited)
        except Exception:
            await asyncio.to_thread(self.storage.delete_prefix, job_prefix(job.id))
            raise
        if job.cached:  # completed already: its only transition is None -> completed
            self.finisher.announce(job)
            return job
        self.scheduler.start(self.expire)
        try:
            await self.scheduler.enqueue(job)
        except Exception:  # not queued, so not accepted: take the record back if the store still answers
            await self.jobs.delete(job.id)
            await asyncio.to_thread(self.storage.delete_prefix, job_prefix(job.id))
            raise
        self.bus.publish(queued_event(job, await self.broker.position(job.id)))
        await self.scheduler.count_queue()
        return job

    async def expire(self, job_id: str) -> None:
        """A queued job's deadline passed: it is failed now and never runs."""
        job = await self.jobs.get(job_id)
        if job is not None and job.status is JobStatus.queued and await self.scheduler.dequeue(job):
            await self.finisher.expire(job, "its deadline passed while it was queued")

    async def _final_among(self, job_ids: list[str]) -> set[str]:
        """The ids whose jobs are final (or gone): what workers finished unseen by this process."""
        final = set()
        for job_id in job_ids:
            job = await self.jobs.get(job_id)
            if job is None or job.status.final:
                final.add(job_id)
        return final

    async def get(self, job_id: str) -> Job:
        job = await self.jobs.get(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def list(self, limit: int, after: str | None, tenant: str | None = None) -> list[Job]:
        try:
            if tenant is None:
                jobs = await self.jobs.list(limit, after)
            else:
                jobs = await self.jobs.list_for_tenant(tenant, limit, after)
        except KeyError:
            raise ReelserveError(ErrorCode.invalid_parameter, f"no video with id '{after}'", param="after") from None
        if any(not job.status.final for job in jobs):  # ids handed out: an awaited insert must be on disk
            await self.jobs.make_durable()
        return jobs

    async def cancel(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job.status.final:
            return job
        if job.status is JobStatus.in_progress:
            self.stop_requested.add(job_id)  # its row leaves its batch at the next step boundary
        await self.scheduler.dequeue(job)
        await self.scheduler.count_queue()
        if not await self.finisher.cancel(job):
            return await self.get(job_id)  # it finished first; nothing to cancel
        return job

    async def delete(self, job_id: str) -> None:
        job = await self.get(job_id)
        if not job.status.final:
            await self.cancel(job_id)
        await self.video_cache.drop_job(job_id)
        await self.jobs.delete(job_id)
        await asyncio.to_thread(self.storage.delete_prefix, job_prefix(job_id))

    async def wait(self, job_id: str, timeout: float, submitted: Job | None = None) -> Job:
        async with self.bus.subscribe(job_id, progress=False) as events:
            job = submitted if submitted is not None else await self.get(job_id)
            try:
                async with asyncio.timeout(timeout):
                    while not job.status.final:
                        job = await self._final_or_latest(job_id, events)
            except TimeoutError:
                job = await self.get(job_id)
        if not job.status.final:  # handed out unfinished: its record must outlive the machine
            await self.jobs.make_durable()
        return job

    async def _final_or_latest(self, job_id: str, events: asyncio.Queue[JobEvent]) -> Job:
        """The job from its final event (made in this process: no read), or as stored once the
        event came from elsewhere or none came within ``_EVENT_POLL_S`` (an event may be lost)."""
        try:
            async with asyncio.timeout(_EVENT_POLL_S):
                while not (event := await events.get()).final:
                    pass
            if event.job is not None:
                return event.job
        except TimeoutError:
            pass
        return await self.get(job_id)

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        async with self.bus.subscribe(job_id) as events:
            snapshot = await self._snapshot(await self.get(job_id))
            yield snapshot
            while not snapshot.final:
                try:
                    async with asyncio.timeout(_EVENT_POLL_S):
                        event = await events.get()
                except TimeoutError:  # quiet: the record (and queue position) may have moved on
                    event = await self._snapshot(await self.get(job_id))
                    if event.status == snapshot.status and event.queue_position == snapshot.queue_position:
                        continue
                snapshot = event
                yield snapshot

    async def _snapshot(self, job: Job) -> JobEvent:
        if job.status is JobStatus.queued:
            return queued_event(job, await self.broker.position(job.id))
        return status_event(job)

    async def content(self, job_id: str, variant: Variant) -> Content:
        job = await self.get(job_id)
        if job.status is not JobStatus.completed:
            raise ReelserveError(
                ErrorCode.conflict, f"video '{job_id}' is {job.status.value}; content exists once completed"
            )
        video = job.video_key or video_key(job_id)
        if variant == "thumbnail":
            key = job.thumbnail_key or thumbnail_key(job_id)
            await self._make_thumbnail(job_id, video, key)
            return Content(self.storage, key, THUMBNAIL_CONTENT_TYPE)
        return Content(self.storage, video, MP4_CONTENT_TYPE)

    async def preview(self, job_id: str) -> bytes:
        """The newest live preview of the job, a WebP (kept after the job ends); conflict while there is none."""
        job = await self.get(job_id)
        try:
            return await asyncio.to_thread(self.storage.get, preview_key(job_id))
        except FileNotFoundError:
            pass
        every = job.params.preview_every
        if every == 0:
            hint = "it asked for none: send preview_every (steps between previews) when you create a video"
        elif job.status.final:
            hint = f"it ended {job.status.value} before its first preview (every {every} steps)"
        else:
            hint = f"the first comes after step {every} of its run"
        raise ReelserveError(ErrorCode.conflict, f"video '{job_id}' has no preview yet: {hint}")

    async def _make_thumbnail(self, job_id: str, video: str, key: str) -> None:
        """The thumbnail, made from the video if this is its first request (``engine/thumbnails.py``)."""
        try:
            made = await asyncio.to_thread(ensure_thumbnail, self.storage, video, key)
        except FileNotFoundError:  # the video went with its job, deleted since it was read
            raise job_not_found(job_id) from None
        if made and await self.jobs.get(job_id) is None:  # deleted while it was made: no orphan left
            await asyncio.to_thread(self.storage.delete_prefix, key)
            raise job_not_found(job_id)

    async def queue_depth(self) -> int:
        return await self.broker.depth()

    def models_info(self) -> list[dict[str, Any]]:
        return [self.model_info()]

    def model_info(self) -> dict[str, Any]:
        tiers = self.scheduler.tiers
        model = model_object(
            self.model_name, self.limits, self.accelerations, list(tiers.tiers), tiers.default_tier, self.card
        )
        if self.step_scheduling is not None:
            model["step_scheduling"] = dict(self.step_scheduling)
        return model
