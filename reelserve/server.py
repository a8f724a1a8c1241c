"""Wires the embedded mode together: SQLite job store, in-process broker, local storage,
one engine and the HTTP app. Model loading and warm-up happen in the background so the
server answers /healthz (and accepts jobs) while /readyz still says not ready."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from reelserve.api.app import create_app
from reelserve.engine.engine import Engine
from reelserve.engine.runner import PipelineRunner
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.metrics import Metrics
from reelserve.models import LoadedModel, LoadOptions, get_spec, load_model
from reelserve.settings import Settings
from reelserve.storage.local import LocalStorage

log = logging.getLogger(__name__)


def load_options(settings: Settings) -> LoadOptions:
    return LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        cpu_offload=settings.cpu_offload,
        vae_tiling=settings.vae_tiling,
        path=settings.model_path,
    )


def runner_for(model: LoadedModel) -> PipelineRunner:
    return PipelineRunner(model.pipeline, model.device, model.max_sequence_length)


class Server:
    """One process serving one model. ``app`` is the ASGI app to hand to uvicorn."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = get_spec(settings.model)  # an unknown model fails here, before anything starts
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteJobStore(settings.db_path)
        self.metrics = Metrics()
        self.engine = Engine(
            model_name=self.spec.name,
            limits=self.spec.limits,
            store=self.store,
            broker=LocalBroker(),
            storage=LocalStorage(settings.storage_dir),
            metrics=self.metrics,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
        )
        self.model: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self.app: FastAPI = create_app(
            self.engine,
            self.metrics,
            api_keys=settings.api_keys,
            sync_max_wait_s=settings.sync_max_wait_s,
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        requeued = await self.engine.recover()
        if requeued:
            log.info("re-queued %d unfinished jobs from the last run", requeued)
        loading = asyncio.create_task(self._load_and_start())
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await self.engine.stop()
            self.store.close()

    async def _load_and_start(self) -> None:
        try:
            model = await asyncio.to_thread(load_model, self.spec.name, load_options(self.settings))
            seconds = await asyncio.to_thread(model.warm_up, self.settings.warmup_runs)
        except Exception as exc:
            self.load_error = exc
            log.exception("loading model %s failed; the server stays not ready", self.spec.name)
            return
        log.info("model %s loaded and warmed up (%d runs, %.2fs)", self.spec.name, self.settings.warmup_runs, seconds)
        self.model = model
        await self.engine.start(runner_for(model))
