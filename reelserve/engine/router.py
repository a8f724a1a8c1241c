"""Several models behind one API (``--model`` repeated): one engine per model, each with its own limits,
queue, scheduler, batching and accelerations, over one job store, event bus, storage and result cache.
``ModelRouter`` is the ``VideoService`` the HTTP layer sees: a new request goes to its ``model``'s engine
(the first model's when it names none); a call about a job reads the shared store and acts through the
engine of the job's model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from reelserve.engine.front import VideoFront
from reelserve.engine.service import Content, Variant
from reelserve.schemas import ErrorCode, Job, JobEvent, ReelserveError, VideoCreateRequest
from reelserve.schemas.inputs import Uploads
from reelserve.schemas.requests import VideoRemixRequest


class ModelRouter:
    """:param engines: by model name, the default first. :param loaded: whether a model's weights are on
    the device now; :param swap_cost: the seconds bringing them in would take (both on the model objects)."""

    def __init__(self, engines: dict[str, VideoFront], loaded: Callable[[str], bool] | None = None,
                 swap_cost: Callable[[str], float] | None = None) -> None:
        self.engines = engines
        self.default = next(iter(engines.values()))
        self.loaded, self.swap_cost = loaded, swap_cost

    @property
    def ready(self) -> bool:
        """Every model loaded and its services answering, and some model's circuit admitting work: one
        model's failing batches refuse its own jobs (503), not the whole server's traffic."""
        engines = self.engines.values()
        return (all(e.accepting and e.health() for e in engines)
                and any(e.scheduler.ready for e in engines))

    def engine_for(self, model: str | None) -> VideoFront:
        engine = self.engines.get(model or self.default.model_name)
        if engine is None:
            served = ", ".join(f"'{name}'" for name in self.engines)
            raise ReelserveError(ErrorCode.unknown_model, f"model: '{model}' is not served here; this server serves "
                                 f"{served} (send one of them, or leave model out for '{self.default.model_name}')",
                                 param="model")
        return engine

    async def submit(self, request: VideoCreateRequest, tenant: str | None = None, awaited: bool = False,
                     uploads: Uploads | None = None) -> Job:
        return await self.engine_for(request.model).submit(request, tenant, awaited, uploads)

    async def remix(self, video_id: str, body: VideoRemixRequest, tenant: str | None = None) -> Job:
        source = await self.default.get(video_id)  # a remix runs on the model that made its source
        return await self.engine_for(source.params.model).remix(video_id, body, tenant)

    async def get(self, job_id: str) -> Job:
        return await self.default.get(job_id)

    async def list(self, limit: int, after: str | None, tenant: str | None = None) -> list[Job]:
        return await self.default.list(limit, after, tenant)

    async def cancel(self, job_id: str) -> Job:
        return await (await self._owner(job_id)).cancel(job_id)

    async def delete(self, job_id: str) -> None:
        await (await self._owner(job_id)).delete(job_id)

    async def wait(self, job_id: str, timeout: float, submitted: Job | None = None) -> Job:
        return await self.default.wait(job_id, timeout, submitted)

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """Through the job's model's engine: its queue knows the job's position."""
        async for event in (await self._owner(job_id)).events(job_id):
            yield event

    async def content(self, job_id: str, variant: Variant) -> Content:
        return await self.default.content(job_id, variant)

    async def preview(self, job_id: str) -> bytes:
        return await self.default.preview(job_id)

    async def queue_depth(self) -> int:
        return sum([await engine.queue_depth() for engine in self.engines.values()])

    def model_info(self) -> dict[str, Any]:
        return self.default.model_info()

    def models_info(self) -> list[dict[str, Any]]:
        """Every served model's object; with several, whether its weights are on the device now."""
        infos = [engine.model_info() for engine in self.engines.values()]
        for info in infos:
            if self.loaded is not None:
                info["loaded"] = self.loaded(info["id"])
            if self.swap_cost is not None:  # what a job for it waits for its weights alone (0: loaded)
                info["swap_in_s"] = round(self.swap_cost(info["id"]), 4)
        return infos

    async def _owner(self, job_id: str) -> VideoFront:
        """The engine of the job's model (its scheduler and worker act on it); for a job that does not
        exist, the default one, whose 404 it is."""
        try:
            job = await self.default.get(job_id)
        except ReelserveError:
            return self.default
        return self.engines.get(job.params.model, self.default)
