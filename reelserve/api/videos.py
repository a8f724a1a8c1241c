"""``/v1/videos``: the OpenAI videos API shape, plus sync, cancel and SSE events."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

from reelserve.api.auth import ANONYMOUS_TENANT, tenant_of
from reelserve.api.content import ContentDelivery, content_response
from reelserve.api.errors import validation_error
from reelserve.engine.service import VideoService
from reelserve.schemas import ErrorCode, ReelserveError, VideoCreateRequest

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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


_REQUEST_SCHEMA = _inline_defs(VideoCreateRequest.model_json_schema())
_CREATE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _REQUEST_SCHEMA},
            "multipart/form-data": {"schema": _REQUEST_SCHEMA},
        },
    }
}


def videos_router(
    service: VideoService,
    sync_max_wait_s: float,
    content_delivery: ContentDelivery = "api",
    presign_ttl_s: int = 3600,
) -> APIRouter:
    router = APIRouter(prefix="/v1/videos", tags=["videos"])

    async def create(request: Request, wait: float | None) -> Response:
        if wait is not None and not 0 < wait <= sync_max_wait_s:
            raise ReelserveError(
                ErrorCode.invalid_parameter, f"wait must be > 0 and at most {sync_max_wait_s:g} seconds", "wait"
            )
        job = await service.submit(await _parse_create(request), tenant=tenant_of(request))
        if wait is None:
            return JSONResponse(job.to_video_object())
        job = await service.wait(job.id, wait)
        return JSONResponse(job.to_video_object(), status_code=200 if job.status.final else 202)

    @router.post("", openapi_extra=_CREATE_DOC, summary="Create a video job")
    async def create_video(
        request: Request, wait: Annotated[float | None, Query(description="seconds to wait")] = None
    ) -> Response:
        """Accepts JSON or form bodies. With ``wait``, answers 200 once the job is final, or 202
        with the job to poll if ``wait`` seconds pass first."""
        return await create(request, wait)

    @router.post("/sync", openapi_extra=_CREATE_DOC, summary="Create a video and wait for it")
    async def create_video_sync(request: Request, wait: float | None = None) -> Response:
        return await create(request, wait if wait is not None else sync_max_wait_s)

    @router.get("")
    async def list_videos(
        request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None
    ) -> dict[str, Any]:
        """Newest first. With API keys on, only the caller's own jobs."""
        tenant = tenant_of(request)
        jobs = service.list(limit + 1, after, None if tenant == ANONYMOUS_TENANT else tenant)
        page = jobs[:limit]
        return {
            "object": "list",
            "data": [job.to_video_object() for job in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit,
        }

    @router.get("/{video_id}")
    async def retrieve_video(video_id: str) -> dict[str, Any]:
        return service.get(video_id).to_video_object()

    @router.delete("/{video_id}")
    async def delete_video(video_id: str) -> dict[str, Any]:
        await service.delete(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @router.post("/{video_id}/cancel")
    async def cancel_video(video_id: str) -> dict[str, Any]:
        return (await service.cancel(video_id)).to_video_object()

    @router.get("/{video_id}/content")
    async def download_content(
        request: Request, video_id: str, variant: Literal["video", "thumbnail"] = "video"
    ) -> Response:
        """The MP4 (HTTP Range supported) or the JPEG thumbnail; 409 until the job completes. With
        presigned content delivery, a 307 to the object store instead."""
        content = service.content(video_id, variant)
        return content_response(content, request, content_delivery, presign_ttl_s)

    @router.get("/{video_id}/events")
    async def video_events(video_id: str) -> EventSourceResponse:
        """Server-Sent Events: ``queued`` (queue_position), ``progress`` (step/total_steps) and
        ``status`` events; the stream ends after the final status."""
        service.get(video_id)  # 404 before the stream starts, not inside it

        async def stream() -> Any:
            async for event in service.events(video_id):
                yield {"event": event.type.value, "data": event.model_dump_json()}

        return EventSourceResponse(stream(), ping=15)

    return router


async def _parse_create(request: Request) -> VideoCreateRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        form = await request.form()
        data: Any = {key: value for key, value in form.items() if isinstance(value, str)}
        if "cache" in data:  # the one nested field: a form carries it as JSON text
            with contextlib.suppress(json.JSONDecodeError):
                data["cache"] = json.loads(data["cache"])
    else:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ReelserveError(ErrorCode.invalid_request, "body must be JSON or form data") from None
        if not isinstance(data, dict):
            raise ReelserveError(ErrorCode.invalid_request, "body must be a JSON object")
    try:
        return VideoCreateRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
