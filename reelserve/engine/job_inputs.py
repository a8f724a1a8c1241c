"""The front's side of what a user brings besides a prompt: a first frame (``input_reference``), a
clip to re-draw (``input_video``) or a video to remix. Each is read and checked here, before the job
exists (a bad one is a 422 naming its field, and nothing is stored), its digest goes into the job's
parameters (so the result cache keys on what the model sees), and its bytes are staged: stored under
the job's prefix just before the job is queued, where whichever worker runs it reads them
(``row_inputs``). Nothing here needs torch: the distributed API runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reelserve.engine.storage_keys import (
    latents_key,
    reference_key,
    source_clip_key,
    source_latents_key,
    video_key,
)
from reelserve.inputs import images, videos
from reelserve.schemas import GenerationParams, Job, JobStatus, ModelLimits, VideoCreateRequest, invalid
from reelserve.schemas.errors import ErrorCode, ReelserveError
from reelserve.schemas.inputs import DEFAULT_STRENGTH, ImageReference, Uploads
from reelserve.schemas.requests import VideoRemixRequest
from reelserve.storage.base import Storage


@dataclass
class StagedInputs:
    """Files to store under a job's prefix once it is accepted: (storage key for a job id, bytes)."""

    files: list[tuple[Callable[[str], str], bytes]] = field(default_factory=list)

    def store(self, storage: Storage, job_id: str) -> None:
        for key, data in self.files:
            storage.put(key(job_id), data)

    def __bool__(self) -> bool:
        return bool(self.files)


async def with_clip_frames(request: VideoCreateRequest, uploads: Uploads, limits: ModelLimits) -> VideoCreateRequest:
    """A video-to-video request that says nothing of its length gets its clip's frame count (one the
    model makes, else a 422 saying what to send)."""
    clip = clip_bytes(request, uploads)
    if clip is None or request.num_frames is not None or request.seconds is not None:
        return request
    header = await asyncio.to_thread(videos.read_header, clip)
    k, most = limits.temporal_multiple, limits.max_frames
    if header.frames <= 0 or (header.frames - 1) % k or header.frames > most:
        usable = min(header.frames, most) if header.frames > 0 else most
        hint = (usable - 1) // k * k + 1
        raise invalid(videos.FIELD, f"{videos.FIELD}: the clip has {header.frames or 'an unknown number of'} frames, "
                      f"not one this model makes ({k}k+1 up to {most}); send num_frames (e.g. {hint}) to use its "
                      "first frames")
    return request.model_copy(update={"num_frames": header.frames})


def clip_bytes(request: VideoCreateRequest, uploads: Uploads) -> bytes | None:
    if uploads.input_video is not None and request.input_video is not None:
        raise invalid(videos.FIELD, f"{videos.FIELD}: send the clip once, as a file or as a data URL, not both")
    if uploads.input_video is not None:
        return uploads.input_video
    return None if request.input_video is None else videos.from_data_url(request.input_video)


def image_bytes(request: VideoCreateRequest, uploads: Uploads) -> bytes | None:
    reference = request.input_reference
    if uploads.input_reference is not None and reference is not None:
        raise invalid(images.FIELD, f"{images.FIELD}: send the image once, as a file or as a data URL, not both")
    if uploads.input_reference is not None:
        return uploads.input_reference
    if reference is None:
        return None
    url = reference.image_url if isinstance(reference, ImageReference) else reference
    if not url.lstrip().startswith("data:"):
        raise invalid(images.FIELD, f"{images.FIELD}: this server fetches no URL; send the image as a data URL "
                      "'data:image/png;base64,...' or upload the file as multipart/form-data")
    return images.from_data_url(url)


async def resolve_inputs(request: VideoCreateRequest, uploads: Uploads, params: GenerationParams,
                         limits: ModelLimits) -> tuple[GenerationParams, StagedInputs]:
    """``params`` with the inputs' digests, and the inputs to store once the job is accepted."""
    image, clip = image_bytes(request, uploads), clip_bytes(request, uploads)
    model = params.model
    if image is not None and clip is not None:
        raise invalid(images.FIELD, f"{images.FIELD}: send a first frame or a clip to re-draw (input_video), not both")
    if image is None and limits.image_input == "required":
        raise invalid(images.FIELD, f"{images.FIELD}: {model} makes video from an image: send the first frame "
                      "(an image file, or a data URL in JSON)")
    if request.input_fit is not None and image is None and clip is None:
        raise invalid("input_fit", "input_fit: it says how to fit an input_reference or input_video; send one, "
                      "or leave input_fit out")
    if request.strength is not None and clip is None:
        raise invalid("strength", "strength: it says how much of an input_video to re-draw; send input_video "
                      "too, or remix a finished video (POST /v1/videos/{id}/remix)")
    fit = None if request.input_fit is None else images.Fit(request.input_fit)
    if image is not None:
        if limits.image_input == "none":
            raise invalid(images.FIELD, f"{images.FIELD}: {model} takes no first frame (text to video only); "
                          "send a model that does (GET /v1/models lists each model's inputs), or leave it out")
        reference = await asyncio.to_thread(images.read_reference, image, params.width, params.height, fit)
        png = await asyncio.to_thread(images.to_png, reference.pixels)
        params = params.model_copy(update={"input_reference": reference.digest,
                                           "input_fit": None if reference.fit is None else reference.fit.value})
        return params, StagedInputs([(reference_key, png)])
    if clip is not None:
        if not limits.video_input:
            raise invalid(videos.FIELD, f"{videos.FIELD}: {model} takes no clip to re-draw; leave it out")
        source = await asyncio.to_thread(videos.read_clip, clip, params.width, params.height, params.num_frames, fit)
        params = params.model_copy(update={
            "source": source.digest, "input_fit": None if source.fit is None else source.fit.value,
            "strength": checked_strength(request.strength, params.num_inference_steps)})
        return params, StagedInputs([(source_clip_key, clip)])
    return params, StagedInputs()


def checked_strength(strength: float | None, steps: int) -> float:
    """The strength a re-draw runs at (the default when None); one that runs no step is refused."""
    strength = DEFAULT_STRENGTH if strength is None else strength
    if int(steps * strength) < 1:
        raise invalid("strength", f"strength: {strength:g} of {steps} steps runs no step (int(steps·strength) = 0); "
                      f"send at least {1 / steps:.3g}, or more steps")
    return strength


def remix_request(source: Job, body: VideoRemixRequest) -> VideoCreateRequest:
    """The create request a remix stands for: the source video's model, size, length and frame rate, and
    its steps, guidance, shift, negative prompt and seed unless the remix sets them (the same noise keeps
    most of what the new prompt does not change); the remix's own prompt."""
    if source.status is not JobStatus.completed:
        raise ReelserveError(ErrorCode.conflict, f"video '{source.id}' is {source.status.value}; only a completed "
                             "video can be remixed: wait for it to complete", param="video_id")
    p = source.params
    inherited = {"num_inference_steps": p.num_inference_steps, "guidance_scale": p.guidance_scale,
                 "guidance_scale_2": p.guidance_scale_2, "flow_shift": p.flow_shift, "negative_prompt": p.negative_prompt,
                 "seed": p.seed}
    fields = {**inherited, **body.model_dump(exclude_unset=True, exclude={"strength"})}
    return VideoCreateRequest(model=p.model, width=p.width, height=p.height, num_frames=p.num_frames, fps=p.fps,
                              **fields)


def stage_remix(storage: Storage, source: Job, params: GenerationParams, strength: float | None,
                now: float | None = None) -> tuple[GenerationParams, StagedInputs]:
    """The source's final latents while they are kept, else its MP4 (re-encoded by the worker); in
    the remix's parameters their digest and the strength. Blocking: call it off the loop."""
    now = time.time() if now is None else now
    strength = checked_strength(strength, params.num_inference_steps)
    owner = source.cache_source_id or source.id  # a cached copy's latents are its source's
    data: bytes | None = None
    key: Callable[[str], str] = source_clip_key
    if source.expires_at is not None and now < source.expires_at:
        try:
            data, key = storage.get(latents_key(owner)), source_latents_key
        except FileNotFoundError:
            data = None
    elif source.expires_at is not None:  # expired: gone now (and with the job, if never remixed again)
        storage.delete_prefix(latents_key(owner))
    if data is None:
        try:
            data, key = storage.get(source.video_key or video_key(source.id)), source_clip_key
        except FileNotFoundError:
            raise ReelserveError(ErrorCode.conflict, f"video '{source.id}' has no content left to remix",
                                 param="video_id") from None
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    params = params.model_copy(update={"source": digest, "strength": strength})
    return params, StagedInputs([(key, data)])
