"""Wires the embedded mode together: SQLite job store, in-process broker, local storage,
one engine and the HTTP app. Model loading and warm-up happen in the background so the
server answers /healthz (and accepts jobs) while /readyz still says not ready."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from reelserve.accel.options import PRESETS, AccelerationOptions
from reelserve.accel.options import resolve as resolve_accelerations
from reelserve.accel.thresholds import threshold_for
from reelserve.adapters import AdapterRegistry
from reelserve.adapters.checks import fits_published_layout
from reelserve.api.app import create_app
from reelserve.api.http_server import uvicorn_config
from reelserve.cache.embedder import MiniLMEmbedder
from reelserve.cache.memory import MemoryTier
from reelserve.cache.policy import CachePolicy, SensitiveRules
from reelserve.cache.redis_tier import redis_tier_from_url
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic import SemanticStore
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.dashboard import Dashboard
from reelserve.engine.engine import Engine
from reelserve.engine.front import VideoFront
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.events import Events
from reelserve.engine.notifier import WebhookNotifier
from reelserve.engine.scheduler import SchedulingOptions
from reelserve.engine.service import VideoService
from reelserve.jobs.base import Broker, JobStore
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.metrics import Metrics
from reelserve.scheduling_options import scheduling
from reelserve.redis_names import RedisKeys
from reelserve.models import ModelSpec, get_spec, model_version, weights_source
from reelserve.schemas.requests import GenerationParams, ModelLimits
from reelserve.settings import Settings
from reelserve.stats import LocalStats, StatsRecorder
from reelserve.storage.base import Storage
from reelserve.storage.local import LocalStorage

if TYPE_CHECKING:  # torch and diffusers: imported where a model is loaded (model_host), never by the API role
    from reelserve.models import LoadedModel
from reelserve.webhooks import WebhookSender

log = logging.getLogger(__name__)


def accelerations(settings: Settings) -> AccelerationOptions:
    """The preset's options with every explicitly set flag over them."""
    overrides = {name: getattr(settings, name) for name in AccelerationOptions.model_fields}
    if settings.parallel_layout.parallel and overrides["cfg_batching"] is None:
        overrides["cfg_batching"] = False  # a parallel group runs the guidance's branches itself
    options, _ = resolve_accelerations(settings.preset, overrides)
    return options


def step_cache_threshold(settings: Settings) -> float | None:
    options = accelerations(settings)
    if options.step_cache == "none":
        return None
    return threshold_for(options.step_cache, settings.model, options.step_cache_threshold)


def accelerations_in_force(settings: Settings) -> list[str]:
    """What a job reports in ``accelerations``: the preset, a dtype other than auto, the options."""
    head = [f"preset={settings.preset}"] if settings.preset else []
    head += [f"dtype={settings.dtype}"] if settings.dtype != "auto" else []
    return head + accelerations(settings).describe(step_cache_threshold(settings))


def caches_results(settings: Settings) -> bool:
    """First-Block Cache decides to skip from the whole batch's residual change, so a row's video
    depends on its batch-mates (tested): such a video is not "the" video for its request, and the
    result cache stays off rather than hand it out as one."""
    if settings.cache_enabled and accelerations(settings).step_cache == "fbcache":
        log.warning("step cache 'fbcache' makes videos depend on their batch-mates; the result cache is off")
        return False
    return settings.cache_enabled


def served_limits(spec: ModelSpec, settings: Settings) -> ModelLimits:
    """The model's limits with the server's defaults: the preset's step count (a request that names
    its steps keeps them; one that leaves them to the server gets the preset's), and previews."""
    from reelserve.models.specs import weights_limits

    limits = weights_limits(spec, settings.model_path).model_copy(update={
        "default_preview_every": settings.preview_every,
        "max_loras": settings.max_loras if settings.serves_adapters else 0,
    })
    if settings.preset is None:
        return limits
    steps = PRESETS[settings.preset].default_steps(spec.limits.default_steps)
    return limits.model_copy(update={"default_steps": steps})


def job_warnings(spec: ModelSpec, settings: Settings) -> Callable[[GenerationParams], list[str]] | None:
    """What the served weights say of a request: words outside their training vocabulary (for a
    weights directory that lists it), a clip shape outside the model card's trained ones."""
    from reelserve.models import weights_source
    from reelserve.models.vocabulary import known_words, unknown_words_warning

    source = weights_source(spec.name, settings.model_path)
    known = known_words(Path(source) / "vocabulary.json") if source and Path(source).is_dir() else None
    card = spec.card
    if known is None and card is None:
        return None

    def check(params: GenerationParams) -> list[str]:
        hint = card.about if card is not None else ""
        warnings = [unknown_words_warning(params.prompt, known, hint), card.shape_warning(params) if card else None]
        return [warning for warning in warnings if warning]

    return check


def output_settings(settings: Settings) -> dict[str, object]:
    """The settings that change a video's pixels, for cache keys. device and dtype change the floats
    (CPU and CUDA kernels, and bfloat16, round differently), and tiled VAE decoding blends tile seams.
    Left out on purpose: cpu_offload (same kernels, only moved), batching (rows are independent, and
    equal to single runs) and the text-embedding cache (bit-identical by test)."""
    return {
        "device": settings.device,
        "dtype": settings.dtype,
        "vae_tiling": settings.vae_tiling,
        **accelerations(settings).pixel_settings(step_cache_threshold(settings)),
    }


def cache_policy(settings: Settings, version: str) -> CachePolicy:
    return CachePolicy(
        model_version=version,
        output_settings=output_settings(settings),
        scope=settings.cache_scope,
        semantic_default=settings.cache_semantic_default,
        min_similarity_default=settings.cache_min_similarity,
        sensitive=SensitiveRules.compile(settings.cache_sensitive_patterns, settings.cache_sensitive_hook),
    )


def result_cache(settings: Settings, metrics: Metrics) -> tuple[ResultCache, SemanticCache]:
    """The two-tier cache and its semantic matching. Nothing connects or loads here: Redis on
    ``ResultCache.start``, the embedding model on the first semantic request."""
    redis = None
    if settings.redis_url:
        prefix = RedisKeys(settings.redis_namespace).cache.prefix
        redis = redis_tier_from_url(settings.redis_url, ttl_s=settings.cache_ttl_s, prefix=prefix)
    memory = MemoryTier(settings.cache_l1_entries, settings.cache_l1_mb * 2**20, ttl_s=settings.cache_ttl_s)
    cache = ResultCache(memory, redis, metrics=metrics, use_bloom=settings.cache_bloom)
    # The semantic records share the cache's client, prefix and TTL, so flushes and outages treat them alike.
    store = SemanticStore(redis.client, ttl_s=redis.ttl_s, prefix=redis.names.prefix) if redis else None
    return cache, SemanticCache(cache, MiniLMEmbedder(), store)


def serving_config(app: object, settings: Settings) -> uvicorn.Config:
    """How every role is served: uvicorn with the settings' connection limits and read deadlines."""
    return uvicorn_config(
        app, settings.host, settings.port, header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s, keep_alive_s=settings.keep_alive_s, log_level=settings.log_level,
    )


def storage_for(settings: Settings) -> Storage:
    """The configured storage; an S3 bucket that is missing or unreachable fails here, at start-up."""
    if settings.storage == "s3":
        from reelserve.storage.s3 import S3Storage  # boto3 is imported only by servers that use it

        assert settings.s3_bucket is not None  # Settings checks it
        s3 = S3Storage(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_region)
        s3.check()
        return s3
    return LocalStorage(settings.storage_dir)


class Server:
    """One process serving one model. ``app`` is the ASGI app to hand to uvicorn.

    This is the embedded mode (SQLite, in-process queue and events). The distributed roles
    (``reelserve.distributed``) are subclasses that swap the queue parts and the lifespan."""

    shared_queue = False  # other processes share the job store and queue
    runs_model = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = get_spec(settings.model)  # an unknown model fails here, before anything starts
        if self.runs_model:  # and so do placement and accelerations that cannot run here
            from reelserve.model_host import check_load_options

            check_load_options(settings, self.spec)
        # So does a bad sensitive-prompt hook. The policy exists even with the cache off: it also
        # flags sensitive prompts.
        version = model_version(self.spec.name, weights_source(self.spec.name, settings.model_path))
        policy = cache_policy(settings, version)
        # A parked row resumes only on the same weights and the settings that change its floats.
        self.resume_version = f"{version}|{json.dumps(policy.output_settings, sort_keys=True, default=str)}"
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.cache, semantic = result_cache(settings, self.metrics) if caches_results(settings) else (None, None)
        options = scheduling(settings, self.metrics)  # a bad tier or tenant setting fails here
        options.shared_queue = self.shared_queue
        self.scheduling = options
        self.store, broker, bus = self._queue_parts(options)
        stats = self._stats_recorder()
        storage = storage_for(settings)
        self.adapters = AdapterRegistry(storage, check=fits_published_layout(storage),
                                        write_lock=self._adapter_write_lock()) if settings.serves_adapters else None
        self.engine = self._engine(
            model_name=self.spec.name,
            limits=served_limits(self.spec, settings),
            job_warnings=job_warnings(self.spec, settings),
            card=self.spec.card,
            accelerations=accelerations_in_force(settings),
            store=self.store,
            broker=broker,
            storage=storage,
            keep_latents_s=settings.keep_latents_s,
            adapters=self.adapters,
            metrics=self.metrics,
            max_batch_size=settings.max_batch_size,
            max_wait_s=None if settings.max_wait_ms is None else settings.max_wait_ms / 1000,
            cache=self.cache,
            semantic=semantic,
            cache_policy=policy,
            scheduling=options,
            notifier=WebhookNotifier(
                self.store,
                WebhookSender(max_attempts=settings.webhook_max_attempts, timeout_s=settings.webhook_timeout_s,
                              allow=settings.webhook_allow),
                secret_for=lambda tenant: options.tiers.policy(tenant).webhook_secret,
                allow=settings.webhook_allow,
            ),
            bus=bus,
            stats=stats,
        )
        self.engine.step_scheduling = {"continuous_batching": settings.continuous_batching,
                                       "preemption": settings.preemption}
        self.engines: dict[str, Any] = {self.spec.name: self.engine}  # by model, the default first
        self.model: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._more_engines()
        self.app: FastAPI = self._create_app()

    def _more_engines(self) -> None:
        """Several models: the others' engines (``several_models.py``)."""

    def _service(self) -> VideoService:
        return self.engine

    def _engine(self, resume_version: str | None = None, **front: Any) -> VideoFront:
        """A front and a worker (``Engine``): this process accepts jobs and runs them."""
        lease_interval_s = self.settings.claim_idle_s / 3 if self.shared_queue else None
        policy = StepPolicy(join=self.settings.continuous_batching, preempt=self.settings.preemption,
                            parked_limit_bytes=self.settings.parked_rows_mb * 2**20,
                            resume_version=resume_version or self.resume_version,
                            checkpoint_steps=self.settings.checkpoint_steps)
        return Engine(**front, lease_interval_s=lease_interval_s, step_policy=policy)

    @property
    def worker_engine(self) -> Engine:
        """The engine, in the roles that run a model."""
        assert isinstance(self.engine, Engine), "this role runs no model"
        return self.engine

    def _queue_parts(self, options: SchedulingOptions) -> tuple[JobStore, Broker, Events | None]:
        return SqliteJobStore(self.settings.db_path), self._broker_for(self.spec.name, options), None

    def _broker_for(self, model: str, options: SchedulingOptions) -> Broker:
        return LocalBroker()  # in process: one queue per model

    def _stats_recorder(self) -> StatsRecorder:
        return LocalStats()

    def _adapter_write_lock(self) -> Callable[[], AbstractContextManager[object]] | None:
        return None  # one process: the registry's own lock

    def _worker_name(self) -> str:
        return "embedded"

    def _report_worker(self) -> None:
        """Show this process on the dashboard (called on the event loop: Redis heartbeats are a task)."""
        name = self._worker_name()
        engine = self.worker_engine
        engine.stats.register_worker(lambda: engine.worker_status(name))

    def _create_app(self) -> FastAPI:
        settings = self.settings
        return create_app(
            self._service(),
            self.metrics,
            api_keys=settings.api_keys,
            sync_max_wait_s=settings.sync_max_wait_s,
            lifespan=self._lifespan,
            cache_admin=self.engine.video_cache,
            admin_keys=settings.admin_keys,
            content_delivery=settings.content_delivery,
            presign_ttl_s=settings.presigned_url_ttl_s,
            dashboard=Dashboard(self.engine),
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            adapters=self.adapters,
            model_name=self.spec.name,
        )

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        requeued = await self._recover()
        if requeued:
            log.info("re-queued %d unfinished jobs from the last run", requeued)
        if self.cache is not None:
            await self.cache.start()  # subscribed and bloom-synced before the first lookup
        self._report_worker()
        loading = asyncio.create_task(self._load_and_start())
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await self._shut_down()

    async def _recover(self) -> int:
        """Re-queue what the last run left unfinished (every model's, with several)."""
        return await self.engine.recover()

    async def _shut_down(self) -> None:
        await self.engine.stop()
        if self.model is not None and self.model.ranks is not None:  # its followers stop (or go with us)
            self.model.ranks.close()
        await self.engine.stats.close()
        if self.cache is not None:
            await self.cache.close()
        self.store.close()

    async def _load_and_start(self) -> None:
        try:
            from reelserve import model_host as host
            from reelserve.models import load_model

            on_model_thread = self.worker_engine.worker.on_model_thread  # all torch work on one thread
            model = await on_model_thread(
                load_model, self.spec.name, host.load_options(self.settings), host.lanes_to_load(self.settings)
            )
            self.model = model  # (ready once the worker starts) so that shutting down closes its group
            if self.settings.parallel_layout.parallel:  # before warm-up, which then runs through the group
                await on_model_thread(host.start_parallel, model, self.settings, self.metrics)
            batch_sizes = tuple(range(1, self.settings.max_batch_size + 1))
            seconds = await on_model_thread(model.warm_up, self.settings.warmup_runs, batch_sizes)
            lanes, why = await on_model_thread(host.pipeline_lanes_for, model, self.settings, self.metrics,
                                               self.engine.storage)
            if model.adapters is not None and self.adapters is not None:
                await on_model_thread(host.serve_adapters, model, self.adapters, self.settings, self.metrics)
        except Exception as exc:
            self.load_error = exc
            log.exception("loading model %s failed; the server stays not ready", self.spec.name)
            return
        log.info("model %s loaded and warmed up (%d runs, %.2fs)", self.spec.name, self.settings.warmup_runs, seconds)
        log.info("pipeline lanes and cpu threads: %s", why)
        await self.worker_engine.start(lanes)
