"""The distributed roles: ``reelserve api`` (HTTP only, stateless, any number) and ``reelserve worker``
(one model, pulls work). Each is the embedded ``Server`` with the job store, the queue and the events
on Redis (``RedisJobStore``, ``RedisStreamsBroker``, ``RedisEventBus``): the same engine, two
implementations of its seams, plus each role's lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from reelserve.api.errors import error_response
from reelserve.engine.events import Events
from reelserve.engine.front import VideoFront
from reelserve.engine.scheduler import SchedulingOptions
from reelserve.jobs.base import Broker, JobStore
from reelserve.jobs.redis_broker import RedisStreamsBroker
from reelserve.jobs.redis_events import RedisEventBus
from reelserve.redis_names import RedisKeys
from reelserve.jobs.redis_store import RedisJobStore
from reelserve.schemas import ErrorCode, ReelserveError
from reelserve.server import Server
from reelserve.settings import Settings
from reelserve.stats import RedisStats, StatsRecorder
from reelserve.stats.residency import FleetResidency

log = logging.getLogger(__name__)

_PING_S = 1.0  # how often the API checks that Redis answers (its readiness)
_REDIS_TIMEOUT_S = 5.0  # longest a Redis call may hang; the queue's blocking reads are shorter
# An index change is one read and one write of a small object; a holder that died frees it after this.
_ADAPTER_LOCK_S = 30.0
_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _SharedQueueServer(Server):
    shared_queue = True

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("distributed mode needs redis_url (--redis-url / REELSERVE_REDIS_URL)")
        super().__init__(settings)

    def _consumer(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"

    def _queue_parts(self, options: SchedulingOptions) -> tuple[JobStore, Broker, Events | None]:
        settings = self.settings
        assert settings.redis_url is not None
        timeouts = {"socket_timeout": _REDIS_TIMEOUT_S, "socket_connect_timeout": _REDIS_TIMEOUT_S}
        self.sync_redis = redis.Redis.from_url(settings.redis_url, **timeouts)
        self.async_redis = aioredis.Redis.from_url(settings.redis_url, **timeouts)
        namespace = settings.redis_namespace
        store = RedisJobStore(self.sync_redis, namespace, retention_s=settings.job_retention_s)
        self.broker = self._broker_for(self.spec.name, options)
        self.bus = RedisEventBus(self.async_redis, namespace)
        return store, self.broker, self.bus

    def _broker_for(self, model: str, options: SchedulingOptions) -> Broker:
        """``model``'s queue: its Redis streams, one per priority level."""
        settings = self.settings
        return RedisStreamsBroker(
            self.async_redis,
            model,
            self._consumer(),
            namespace=settings.redis_namespace,
            levels=sorted({tier.level for tier in options.tiers.tiers.values()}),
            read_count=settings.max_batch_size,
            claim_idle_ms=round(settings.claim_idle_s * 1000),
            max_deliveries=settings.max_deliveries,
        )

    def _adapter_write_lock(self) -> Callable[[], AbstractContextManager[object]]:
        # Every API and worker process may change the adapters' index in storage: one lock for all.
        key = RedisKeys(self.settings.redis_namespace).adapters_lock()
        return lambda: self.sync_redis.lock(key, timeout=_ADAPTER_LOCK_S, blocking_timeout=_ADAPTER_LOCK_S)

    def _stats_recorder(self) -> StatsRecorder:
        return RedisStats(self.sync_redis, self.async_redis, RedisKeys(self.settings.redis_namespace).stats)

    def _worker_name(self) -> str:
        return self._consumer()

    async def _shut_down(self) -> None:
        await super()._shut_down()
        await self.bus.close()
        await self.async_redis.aclose()
        self.sync_redis.close()


class ApiServer(_SharedQueueServer):
    """``reelserve api``: accepts, lists, cancels and streams jobs; runs none. Ready while Redis answers."""

    runs_model = False  # its --device and accelerations are the workers' business

    def __init__(self, settings: Settings) -> None:
        self.fleet = FleetResidency()  # before Server.__init__, which builds the router over it
        super().__init__(settings)
        self._redis_ok = False
        self._pinging = False
        for name, engine in self.engines.items():  # every model's front (several: several_models.py)
            engine.health = lambda: self._redis_ok
            engine.scheduler.admission.swap_cost = lambda name=name: self.fleet.swap_cost(name)

    def _consumer(self) -> str:
        return f"api-{super()._consumer()}"  # never reads the queue; named for Redis's client list only

    def _engine(self, resume_version: str | None = None, **front: Any) -> VideoFront:
        return VideoFront(**front)  # no worker: no batch loop, pipeline thread, leases or parked rows here

    def _create_app(self) -> FastAPI:
        app = super()._create_app()

        async def unavailable(_: Request, exc: Exception) -> JSONResponse:
            return error_response(
                ReelserveError(
                    ErrorCode.unavailable,
                    f"the job store (Redis) cannot be reached ({type(exc).__name__}); nothing was changed, retry shortly",
                    retry_after=2,
                )
            )

        for error in _UNAVAILABLE:
            app.add_exception_handler(error, unavailable)
        return app

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        if self.cache is not None:
            await self.cache.start()
        await self._open()
        try:
            async with self._pinged():
                yield
        finally:
            await self._shut_down()

    async def _open(self) -> None:
        await self.engine.open()

    @asynccontextmanager
    async def _pinged(self) -> AsyncIterator[None]:
        """Readiness follows Redis while this is open."""
        self._pinging = True
        pinging = asyncio.create_task(self._ping())
        try:
            yield
        finally:
            self._pinging = False
            pinging.cancel()
            await asyncio.gather(pinging, return_exceptions=True)

    async def _ping(self) -> None:
        """Readiness, and which workers hold which models' weights (their heartbeats say it)."""
        # The flag as well as the cancel: redis-py can turn a cancel that lands in its own timeout
        # into a TimeoutError, which the loop catches, and the API then never finished shutting down.
        while self._pinging:
            try:
                self._redis_ok = bool(await self.async_redis.ping())
                self.fleet.update(await self.engine.stats.workers())
            except (redis.exceptions.RedisError, OSError):
                self._redis_ok = False
            except Exception as exc:  # noqa: BLE001 - a worker's unreadable status must not stop readiness
                log.warning("reading the workers' statuses failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(_PING_S)  # a timer, not a wait for anything


class WorkerServer(_SharedQueueServer):
    """``reelserve worker``: loads its model, warms up, then pulls batches. Its HTTP port serves only
    /healthz, /readyz (ready once warmed up and pulling) and /metrics."""

    def _consumer(self) -> str:
        return self.settings.worker_name or super()._consumer()

    def _create_app(self) -> FastAPI:
        app = FastAPI(title="reelserve worker", lifespan=self._lifespan)

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz")
        async def readyz() -> JSONResponse:
            ready = self.engine.ready
            return JSONResponse({"ready": ready, "model": self.spec.name}, status_code=200 if ready else 503)

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(await asyncio.to_thread(self.metrics.render), media_type="text/plain; version=0.0.4")

        return app

    async def _drain(self) -> int:
        """Finish or hand back what this worker holds; how many jobs read ahead it handed back."""
        return await self.worker_engine.drain(self.settings.drain_timeout_s)

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        requeued = await self._recover()
        if requeued:
            log.info("queued %d jobs whose queue entries were missing", requeued)
        if self.cache is not None:
            await self.cache.start()
        self._report_worker()
        loading = asyncio.create_task(self._load_and_start())
        try:
            yield
        finally:  # uvicorn got SIGTERM (or SIGINT): finish or hand back, then go
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            released = await self._drain()
            log.info("worker stopped pulling; handed back %d jobs read ahead", released)
            await self._shut_down()
