"""``/v1/videos``: the OpenAI videos API shape, plus sync, cancel and SSE events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.convertors import Convertor, register_url_convertor

from reelserve.api.auth import JobAccess, caller_of
from reelserve.api.content import CONTENT_RESPONSES, ContentDelivery, content_response, mp4_reply, prefers_mp4
from reelserve.api.errors import error_responses
from reelserve.api.request_body import (
    FORM_TYPES,
    looks_like_json,
    media_type,
    parse_form_body,
    parse_form_with_files,
    parse_json_body,
)
from reelserve.engine.previews import PREVIEW_MEDIA_TYPE
from reelserve.engine.service import VideoService
from reelserve.schemas import ErrorCode, JobStatus, ReelserveError, VideoCreateRequest
from reelserve.schemas.jobs import JOB_ID_PATTERN
from reelserve.schemas.inputs import Uploads
from reelserve.schemas.requests import VideoRemixRequest

UPLOAD_FIELDS = ("input_reference", "input_video")  # multipart file parts the create routes take


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` inlined: a ``#/$defs/...`` reference would resolve against the root of
    the OpenAPI document, which has no ``$defs``."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


class VideoIdConvertor(Convertor[str]):
    """Only a job id's shape (``video_`` and 32 hex digits) matches a per-job route, so ``/v1/videos/sync``
    is never read as a job id: GET on it is a 405, not a search for a job named "sync"."""

    regex = JOB_ID_PATTERN.removeprefix("^").removesuffix("$")

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("video_id", VideoIdConvertor())
VideoId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job id, e.g. video_<32 hex digits>")]

_REQUEST_SCHEMA = _inline_defs(VideoCreateRequest.model_json_schema())
# In multipart the inputs are files (as the openai SDK sends input_reference).
_MULTIPART_SCHEMA = {**_REQUEST_SCHEMA, "properties": {
    **_REQUEST_SCHEMA["properties"], **{name: {"type": "string", "format": "binary"} for name in UPLOAD_FIELDS}}}
_CREATE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _REQUEST_SCHEMA},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}
_REMIX_SCHEMA = _inline_defs(VideoRemixRequest.model_json_schema())
_REMIX_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": _REMIX_SCHEMA},
                                                           "multipart/form-data": {"schema": _REMIX_SCHEMA}}}}
_VIDEO_OBJECT = {"description": "the video object", "content": {"application/json": {"schema": {"type": "object"}}}}
# One Server-Sent Event: its type, and the JobEvent as JSON text (an "error" event ends a deleted job's stream).
_SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string", "enum": ["queued", "progress", "preview", "status", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json"}},
    "required": ["data"],
}
# What a created job's id leads to, so a client (or a fuzzer) can follow a job through its routes.
_JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"video_id": "$response.body#/id"}}
    for name, operation in [("retrieve", "retrieveVideo"), ("content", "downloadVideoContent"),
                            ("events", "followVideoEvents"), ("cancel", "cancelVideo"), ("delete", "deleteVideo"),
                            ("remix", "remixVideo"), ("preview", "retrieveVideoPreview")]
}
# Every status a route can answer, so a client generated from /openapi.json knows them. 503: the
# distributed mode's Redis is unreachable, or the circuit breaker is open (create).
_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the video object; with ?wait (or /sync) and Accept: video/mp4, a completed job's MP4 "
                         "itself (its id in X-Reelserve-Video-Id)",
          "content": {**_VIDEO_OBJECT["content"], "video/mp4": {"schema": {"type": "string", "format": "binary"}}},
          "links": _JOB_LINKS},
    202: {**_VIDEO_OBJECT, "links": _JOB_LINKS,
          "description": "with ?wait: the job, not final yet when the wait ended"},
    **error_responses(400, 401, 403, 413, 422, 429, 503),
}
_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {200: _VIDEO_OBJECT, **error_responses(401, 404, 503)}
_REMIX_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**_VIDEO_OBJECT, "description": "the new video object (queued, or completed from the cache)",
          "links": _JOB_LINKS},
    **error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
}


def videos_router(
    service: VideoService,
    sync_max_wait_s: float,
    content_delivery: ContentDelivery = "api",
    presign_ttl_s: int = 3600,
) -> APIRouter:
    # JobAccess: every route with a {video_id}, now and later, checks its caller may see that job.
    router = APIRouter(prefix="/v1/videos", tags=["videos"], dependencies=[Depends(JobAccess(service))])

    async def create(request: Request, wait: float | None) -> Response:
        if wait is not None and not 0 < wait <= sync_max_wait_s:
            raise ReelserveError(
                ErrorCode.invalid_parameter, f"wait must be > 0 and at most {sync_max_wait_s:g} seconds", "wait"
            )
        (body, uploads), tenant = await _parse_create(request), caller_of(request).tenant
        job = await service.submit(body, tenant=tenant, awaited=wait is not None, uploads=uploads)
        if wait is None:
            return JSONResponse(job.to_video_object())
        job = await service.wait(job.id, wait, submitted=job)
        if job.status is JobStatus.completed and prefers_mp4(request.headers.get("accept")):
            headers = {"x-reelserve-video-id": job.id, "x-reelserve-batch-size": str(job.batch_size or 1),
                       "x-reelserve-cached": str(job.cached).lower()}
            return await mp4_reply(await service.content(job.id, "video"), job.id, headers)
        return JSONResponse(job.to_video_object(), status_code=200 if job.status.final else 202)

    @router.post(
        "", openapi_extra=_CREATE_DOC, summary="Create a video job", operation_id="createVideo",
        responses=_CREATE_RESPONSES,
    )
    async def create_video(
        request: Request, wait: Annotated[float | None, Query(description="seconds to wait")] = None
    ) -> Response:
        """Accepts JSON or form bodies. With ``wait``, answers 200 once the job is final, or 202
        with the job to poll if ``wait`` seconds pass first; a completed job comes back as its MP4
        itself when ``Accept`` prefers ``video/mp4`` (one round trip; the id in X-Reelserve-Video-Id)."""
        return await create(request, wait)

    @router.post(
        "/sync", openapi_extra=_CREATE_DOC, summary="Create a video and wait for it",
        operation_id="createVideoSync", responses=_CREATE_RESPONSES,
    )
    async def create_video_sync(request: Request, wait: float | None = None) -> Response:
        return await create(request, wait if wait is not None else sync_max_wait_s)

    @router.get(
        "", operation_id="listVideos",
        responses={200: {"description": "a page of video objects"}, **error_responses(401, 422, 503)},
    )
    async def list_videos(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(min_length=1, description="the last id of the previous page")] = None,
    ) -> dict[str, Any]:
        """Newest first. With API keys on, only the caller's own jobs (an admin key: every job)."""
        caller = caller_of(request)
        jobs = await service.list(limit + 1, after, None if caller.sees_everything else caller.tenant)
        page = jobs[:limit]
        return {
            "object": "list",
            "data": [job.to_video_object() for job in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit,
        }

    @router.get("/{video_id:video_id}", operation_id="retrieveVideo", responses=_JOB_RESPONSES)
    async def retrieve_video(request: Request, video_id: VideoId) -> dict[str, Any]:
        return request.state.job.to_video_object()  # type: ignore[no-any-return]  # JobAccess read it

    @router.delete(
        "/{video_id:video_id}", operation_id="deleteVideo",
        responses={**_JOB_RESPONSES, 200: {"description": "deleted"}},
    )
    async def delete_video(video_id: VideoId) -> dict[str, Any]:
        await service.delete(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @router.post("/{video_id:video_id}/cancel", operation_id="cancelVideo", responses=_JOB_RESPONSES)
    async def cancel_video(video_id: VideoId) -> dict[str, Any]:
        return (await service.cancel(video_id)).to_video_object()

    @router.post(
        "/{video_id:video_id}/remix", openapi_extra=_REMIX_DOC, summary="Remix a completed video",
        operation_id="remixVideo", responses=_REMIX_RESPONSES,
    )
    async def remix_video(request: Request, video_id: VideoId) -> dict[str, Any]:
        """A new video re-drawing this one with a new prompt (OpenAI's remix): it starts from the video's
        final latents noised to ``strength`` and runs that share of the steps; 409 unless it completed."""
        body = await _parse_remix(request)
        job = await service.remix(video_id, body, tenant=caller_of(request).tenant)
        return job.to_video_object()

    @router.get(
        "/{video_id:video_id}/content", operation_id="downloadVideoContent", responses=CONTENT_RESPONSES,
        response_class=Response,
    )
    async def download_content(
        request: Request, video_id: VideoId, variant: Literal["video", "thumbnail"] = "video"
    ) -> Response:
        """The MP4 (HTTP Range supported) or the JPEG thumbnail; 409 until the job completes. With
        presigned content delivery, a 307 to the object store instead."""
        content = await service.content(video_id, variant)
        return await content_response(content, request, content_delivery, presign_ttl_s)

    @router.get(
        "/{video_id:video_id}/preview", operation_id="retrieveVideoPreview", response_class=Response,
        responses={200: {"description": "the newest live preview, an animated WebP",
                         "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}}},
                   **error_responses(401, 404, 409, 503)},
    )
    async def video_preview(video_id: VideoId) -> Response:
        """The newest live preview of a video (every ``preview_every`` steps while it runs; the last one
        stays after it ends); 409 while there is none. Not cached by clients: it changes as the video runs."""
        return Response(await service.preview(video_id), media_type=PREVIEW_MEDIA_TYPE,
                        headers={"cache-control": "no-store"})

    @router.get(
        "/{video_id:video_id}/events",
        operation_id="followVideoEvents",
        response_class=EventSourceResponse,
        responses={
            200: {"description": "the event stream", "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
            **error_responses(401, 404, 503),
        },
    )
    async def video_events(video_id: VideoId) -> EventSourceResponse:
        """Server-Sent Events: ``queued`` (queue_position), ``progress`` (step/total_steps), ``preview``
        (a live preview as a data: URL, every ``preview_every`` steps) and ``status`` events; the stream
        ends after the final status."""
        # JobAccess answered 404 before the stream started; a job deleted while followed ends it.
        async def stream() -> Any:
            try:
                async for event in service.events(video_id):
                    yield {"event": event.type.value, "data": event.model_dump_json()}
            except ReelserveError as error:
                yield {"event": "error", "data": error.body().model_dump_json()}

        return EventSourceResponse(stream(), ping=15)

    return router


async def _parse_create(request: Request) -> tuple[VideoCreateRequest, Uploads]:
    kind = media_type(request)
    if kind == "application/x-www-form-urlencoded" and await looks_like_json(request):
        kind = "application/json"
    if kind in FORM_TYPES:
        body, files = await parse_form_with_files(request, VideoCreateRequest, json_fields=("cache", "loras"),
                                                  file_fields=UPLOAD_FIELDS)
        return body, Uploads(**files)
    return await parse_json_body(request, VideoCreateRequest), Uploads()


async def _parse_remix(request: Request) -> VideoRemixRequest:
    kind = media_type(request)
    if kind == "application/x-www-form-urlencoded" and await looks_like_json(request):
        kind = "application/json"
    if kind in FORM_TYPES:
        return await parse_form_body(request, VideoRemixRequest, json_fields=("cache",))
    return await parse_json_body(request, VideoRemixRequest)
