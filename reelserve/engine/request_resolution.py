"""From what a client sent to what the engine runs: a create or remix request checked against the
served model, its inputs read and staged (``job_inputs``), its adapters resolved (``adapters``), as
``GenerationParams`` and the files to store with the job. Every refusal is a 4xx naming the field,
before anything is stored."""

from __future__ import annotations

import asyncio

from reelserve.adapters import AdapterRegistry
from reelserve.engine.job_inputs import StagedInputs, remix_request, resolve_inputs, stage_remix, with_clip_frames
from reelserve.schemas import ErrorCode, GenerationParams, Job, ModelLimits, ReelserveError, VideoCreateRequest, invalid
from reelserve.schemas.inputs import LoraRef, Uploads
from reelserve.schemas.requests import VideoRemixRequest, resolve_request
from reelserve.storage.base import Storage


class RequestResolver:
    """:param adapters: the LoRA adapters requests may name; None: the server takes none."""

    def __init__(self, model_name: str, limits: ModelLimits, storage: Storage,
                 adapters: AdapterRegistry | None = None) -> None:
        self.model_name, self.limits, self.storage, self.adapters = model_name, limits, storage, adapters

    async def create(self, request: VideoCreateRequest, uploads: Uploads,
                     tenant: str | None) -> tuple[GenerationParams, StagedInputs]:
        model = request.model or self.model_name
        if model != self.model_name:
            raise ReelserveError(
                ErrorCode.unknown_model,
                f"model: '{model}' is not served here; this server serves '{self.model_name}' (send that, or leave model out)",
                param="model",
            )
        request = await with_clip_frames(request, uploads, self.limits)
        loras = await self._adapters_of(request, tenant) if request.loras else ()
        request = self._adapter_defaults(request, loras)
        self._check_shift(request)
        params = resolve_request(request, model, self.limits).model_copy(update={"loras": loras})
        return await resolve_inputs(request, uploads, params, self.limits)

    def _adapter_defaults(self, request: VideoCreateRequest, loras: tuple[LoraRef, ...]) -> VideoCreateRequest:
        """What the request leaves out and its first adapter that recommends a value says (a distillation
        adapter's "4 steps, guidance 1, shift 5"): the request's own values win, and the video object shows what ran."""
        assert self.adapters is not None or not loras
        index = self.adapters.index() if loras and self.adapters is not None else {}
        infos = [index[ref.name] for ref in loras if ref.name in index]
        update: dict[str, object] = {}
        steps = next((info.steps for info in infos if info.steps is not None), None)
        if request.num_inference_steps is None and steps is not None:
            update["num_inference_steps"] = steps
        guidance = next((info.guidance for info in infos if info.guidance is not None), None)
        if request.guidance_scale is None and guidance is not None:
            update["guidance_scale"] = guidance
            if self.limits.two_experts and request.guidance_scale_2 is None:
                update["guidance_scale_2"] = guidance
        shift = next((info.shift for info in infos if info.shift is not None), None)
        if request.flow_shift is None and shift is not None and self.limits.flow_shift:
            update["flow_shift"] = shift
        return request.model_copy(update=update) if update else request

    async def remix(self, source: Job, body: VideoRemixRequest) -> tuple[VideoCreateRequest, GenerationParams,
                                                                         StagedInputs]:
        """A remix of ``source`` (which the caller may see): the create request it stands for, its
        parameters (the source's adapters too) and the source's latents or MP4 to stage."""
        if not self.limits.video_input:
            raise invalid("video_id", f"video_id: {self.model_name} re-draws no video; remix needs a model that does")
        request = remix_request(source, body)
        if not self.limits.flow_shift and body.flow_shift is None:  # the source's, run on other weights
            request = request.model_copy(update={"flow_shift": None})
        self._check_shift(request)
        params = resolve_request(request, self.model_name, self.limits).model_copy(
            update={"loras": source.params.loras})
        params, staged = await asyncio.to_thread(stage_remix, self.storage, source, params, body.strength)
        return request, params, staged

    def _check_shift(self, request: VideoCreateRequest) -> None:
        if request.flow_shift is not None and not self.limits.flow_shift:
            raise invalid("flow_shift", f"flow_shift: the sampler {self.model_name} is served with takes no "
                          "timestep shift; leave flow_shift out")

    async def _adapters_of(self, request: VideoCreateRequest, tenant: str | None) -> tuple[LoraRef, ...]:
        if self.adapters is None:
            raise invalid("loras", "loras: this server serves no adapters (start it with --adapters or "
                          "--adapters-dir); leave loras out")
        return await asyncio.to_thread(self.adapters.resolve, request.loras or [], tenant, self.model_name,
                                       self.limits.max_loras)
