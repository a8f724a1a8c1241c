"""Several models behind one embedded server (``reelserve serve --model micro --model tiny``).

Each model gets an engine of its own (front and worker: limits, queue, scheduler, batching, its own
accelerations and pipeline thread) over the server's one job store, event bus, storage, result cache
and metrics; ``ModelRouter`` is what the API sees. Their weights share the device under
``--device-memory-mb`` (``models/residency.py``): a batch holds its model on the device, bringing it in
first if it is out (the least recently used idle model going out for room); the seconds that takes go on
the batch's jobs (``timings.swap_s``) and into metrics, and each model's admission counts them for a job
that would have to wait for them, so a deadline the swap alone misses is refused (429, Retry-After).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from reelserve.distributed import ApiServer, WorkerServer
from reelserve.engine.engine import Engine
from reelserve.engine.router import ModelRouter
from reelserve.models.fingerprint import model_version
from reelserve.models.specs import ModelSpec, get_spec, weights_source
from reelserve.server import (
    Server, accelerations, accelerations_in_force, cache_policy, job_warnings, served_limits,
)
from reelserve.scheduling_options import circuit_breaker
from reelserve.settings import Settings
from reelserve.stats import WorkerStatus

log = logging.getLogger(__name__)


class SeveralModels:
    """What a role serving ``settings.models`` (more than one) adds to its server class: an engine per model,
    the router, and (where models run) their loading under one device-memory budget."""

    settings: Settings
    spec: ModelSpec
    engine: Any

    def __init__(self, settings: Settings) -> None:
        if settings.parallel_layout.parallel:
            raise ValueError("--parallel with several models: a parallel worker serves one model; run one per model")
        chosen = [accelerations(settings.for_model(name)) for name in settings.models]
        if settings.device_memory_mb is not None and any(c.quantization != "none" or c.backend == "onnx" for c in chosen):
            raise ValueError("--device-memory-mb with --quantization int8 or --backend onnx: their weights live "
                             "where a swap cannot move them; serve such models without a budget")
        self.memory: Any = None  # DeviceMemory, made where the models load (it imports torch)
        self.base_settings = settings  # each model's: ``settings.for_model(name)``
        super().__init__(settings.for_model(settings.model))  # type: ignore[call-arg]

    def _more_engines(self) -> None:
        """Called by ``Server.__init__`` once the default model's engine exists."""
        first = self.engine
        first.served_models = tuple(self.settings.models)
        for name in self.settings.models[1:]:
            spec, settings = get_spec(name), self.base_settings.for_model(name)
            if self.runs_model:
                from reelserve.model_host import check_load_options

                check_load_options(settings, spec)
            version = model_version(spec.name, weights_source(spec.name, None))
            policy = cache_policy(settings, version)
            engine = self._engine(
                **self._model_parts(spec, settings),
                resume_version=f"{version}|{json.dumps(policy.output_settings, sort_keys=True, default=str)}",
                store=self.store, broker=self._broker_for(name, self.scheduling), storage=first.storage,
                keep_latents_s=settings.keep_latents_s,
                adapters=self.adapters, metrics=self.metrics, max_batch_size=settings.max_batch_size,
                max_wait_s=None if settings.max_wait_ms is None else settings.max_wait_ms / 1000,
                cache=self.cache, semantic=first.video_cache.semantic,
                cache_policy=policy, scheduling=replace(self.scheduling, circuit=circuit_breaker(settings, self.metrics, name)),
                notifier=first.notifier, bus=first.bus, stats=first.stats,
            )
            engine.step_scheduling = first.step_scheduling
            engine.served_models = tuple(self.settings.models)
            self.engines[name] = engine

    def _report_worker(self) -> None:
        """Each model's worker on the dashboard, named by its model."""
        for name, engine in self.engines.items():
            label = f"{self._worker_name()}-{name}"
            engine.stats.register_worker(lambda engine=engine, label=label, name=name: self._resident_status(
                engine.worker_status(label), name))

    def _resident_status(self, status: WorkerStatus, name: str) -> WorkerStatus:
        """With whether the model's weights are on the device: the API role's admission counts the swap."""
        if self.memory is None:  # still loading
            return replace(status, loaded=False)
        return replace(status, loaded=self.memory.resident(name), swap_in_s=round(self.memory.swap_cost(name), 4))

    @staticmethod
    def _model_parts(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
        return {"model_name": spec.name, "limits": served_limits(spec, settings),
                "job_warnings": job_warnings(spec, settings), "card": spec.card,
                "accelerations": accelerations_in_force(settings)}

    def _service(self) -> ModelRouter:
        return ModelRouter(self.engines, loaded=lambda name: self.memory is not None and self.memory.resident(name),
                           swap_cost=lambda name: self.memory.swap_cost(name) if self.memory is not None else 0.0)

    async def _recover(self) -> int:
        return sum([await engine.recover() for engine in self.engines.values()])

    async def _open(self) -> None:  # the API role
        for engine in self.engines.values():
            await engine.open()

    async def _drain(self) -> int:  # the worker role
        return sum([await engine.drain(self.settings.drain_timeout_s) for engine in self.engines.values()])

    async def _load_and_start(self) -> None:
        await self._load_all()

    async def _shut_down(self) -> None:
        for engine in list(self.engines.values())[1:]:  # the default model's engine stops with the server
            await engine.stop()
        await super()._shut_down()  # type: ignore[misc]

    async def _load_all(self) -> None:
        """Every model in turn (loading two at once could hold both in memory past the budget), then every
        engine started (a running model would hold the room the next one loads into)."""
        from reelserve.models.residency import DeviceMemory

        budget = self.settings.device_memory_mb
        self.memory = DeviceMemory(None if budget is None else budget * 2**20, on_swap=self._count_swap)
        started = []
        for name, engine in self.engines.items():
            try:
                if budget is not None:  # the next model loads into room that is free, not over the budget
                    await engine.worker.on_model_thread(self.memory.evict_idle)
                started.append(await self._load_one(name, engine))
            except Exception as exc:
                self.load_error = exc
                log.exception("loading model %s failed; the server stays not ready", name)
                return
        for engine, lanes in started:  # only now: a running model would hold the room the next one loads into
            await engine.start(lanes)
        if self.engine.notifier is not None:  # once for all engines (each re-queued only its own jobs)
            await self.engine.notifier.resume()

    async def _load_one(self, name: str, engine: Engine) -> tuple[Engine, Any]:
        from reelserve import model_host as host
        from reelserve.models import load_model
        from reelserve.models.residency import model_swap

        on_model_thread, settings = engine.worker.on_model_thread, self.base_settings.for_model(name)
        model = await on_model_thread(load_model, name, host.load_options(settings), host.lanes_to_load(settings))
        if name == self.spec.name:
            self.model = model
        seconds = await on_model_thread(model.warm_up, settings.warmup_runs,
                                        tuple(range(1, settings.max_batch_size + 1)))
        lanes, why = await on_model_thread(host.pipeline_lanes_for, model, settings, self.metrics, engine.storage)
        if model.adapters is not None and self.adapters is not None:
            await on_model_thread(host.serve_adapters, model, self.adapters, settings, self.metrics)
        swap = model_swap(model, self.settings.data_dir / "swap" / f"{name}.pt")
        await on_model_thread(self.memory.add, name, swap)
        lanes.residency = lambda: self.memory.use(name)
        lanes.contended = lambda: self.memory.contended(name)
        engine.scheduler.admission.swap_cost = lambda: self.memory.swap_cost(name)
        log.info("model %s loaded and warmed up (%.2fs, %.0f MiB of weights); lanes: %s", name, seconds,
                 swap.nbytes / 2**20, why)
        return engine, lanes

    def _count_swap(self, model: str, direction: str, seconds: float) -> None:
        self.metrics.model_swaps.labels(model=model, direction=direction).inc()
        self.metrics.model_swap_seconds.labels(model=model, direction=direction).observe(seconds)


class SeveralModelsServer(SeveralModels, Server):
    """``reelserve serve`` with several models: every engine accepts and runs its model's jobs (``Server``'s
    lifespan, with ``SeveralModels``' recovery, loading and shutdown)."""


class SeveralModelsApi(SeveralModels, ApiServer):
    """``reelserve api`` with several models: a front per model, each queueing to its model's streams (a
    worker serving that model, alone or among others, takes them)."""

    def _service(self) -> ModelRouter:
        # Which weights are on a device is the workers' to know: they say it with their heartbeats.
        return ModelRouter(self.engines, loaded=self.fleet.loaded, swap_cost=self.fleet.swap_cost)


class SeveralModelsWorker(SeveralModels, WorkerServer):
    """``reelserve worker`` with several models: pulls each model's streams, its models' weights sharing the
    device under --device-memory-mb; at SIGTERM each model's worker drains (``WorkerServer``'s lifespan)."""
