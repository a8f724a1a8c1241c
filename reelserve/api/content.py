"""Handing out a stored video or thumbnail: a presigned URL (a redirect, so the bytes never pass
through the API), a local file (sendfile), or the storage's bytes (S3 through the API). A
thumbnail's first request is the exception: the service makes it from the MP4, which it reads
(``engine/thumbnails.py``).

The Range header is judged here, once, for every kind of storage: one ``bytes=`` range is served
(206); anything else that is not a valid range answers in the API's error shape, never a bare text
page: a malformed header is 400, a range that starts past the end or runs backwards is 416.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from reelserve.api.errors import error_responses
from reelserve.engine.service import Content
from reelserve.schemas import ErrorCode, ReelserveError

ContentDelivery = Literal["api", "presigned"]
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
_MEDIA = {"video/mp4": {"schema": {"type": "string", "format": "binary"}},
          "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}
CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the MP4, or the JPEG thumbnail", "content": _MEDIA},
    206: {"description": "the requested byte range", "content": _MEDIA},
    307: {"description": "presigned content delivery: the object store's URL in Location"},
    **error_responses(400, 401, 404, 409, 416, 422, 503),
}


async def content_response(
    content: Content, request: Request, delivery: ContentDelivery, presign_ttl_s: int
) -> Response:
    """Storage calls that may touch the disk or the network (S3) run off the event loop."""
    storage = content.storage
    presign = getattr(storage, "presigned_url", None)
    if delivery == "presigned" and presign is not None:
        # 307 keeps the method; clients and browsers follow it to the object store.
        return RedirectResponse(presign(content.key, presign_ttl_s), status_code=307)
    size = await asyncio.to_thread(storage.size, content.key)
    wanted = byte_range(request.headers.get("range"), size)
    headers = {"accept-ranges": "bytes"}
    path = storage.local_path(content.key)
    if wanted is None:
        if path is not None:
            return FileResponse(path, media_type=content.media_type, headers=headers)
        return Response(await asyncio.to_thread(storage.get, content.key), media_type=content.media_type,
                        headers=headers)
    if path is not None:
        # FileResponse serves the (already checked) range itself, with sendfile.
        return FileResponse(path, media_type=content.media_type, headers=headers)
    start, end = wanted
    headers["content-range"] = f"bytes {start}-{end}/{size}"
    body = await asyncio.to_thread(storage.read_range, content.key, start, end)
    return Response(body, status_code=206, media_type=content.media_type,
                    headers=headers)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range, clipped to the object; None (the whole object) for no
    header. Raises ``invalid_parameter`` (400) for a malformed header, ``range_not_satisfiable`` (416)
    for a range past the end or backwards."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise ReelserveError(
            ErrorCode.invalid_range,
            "Range must be one range of bytes: 'bytes=START-END', 'bytes=START-' or 'bytes=-SUFFIX' "
            f"(got {header[:80]!r}); leave it out for the whole file",
            param="Range",
        )
    first, last = match.groups()
    if first == "":  # the last n bytes
        if int(last) == 0:
            raise _unsatisfiable(header, size)
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(header, size)
    return start, end


def _unsatisfiable(header: str, size: int) -> ReelserveError:
    return ReelserveError(
        ErrorCode.range_not_satisfiable,
        f"Range {header[:80]!r} selects no byte of this {size}-byte file: START must be below {size} and "
        "END at least START",
        param="Range",
        headers={"content-range": f"bytes */{size}"},
    )


def prefers_mp4(accept: str | None) -> bool:
    """Does an ``Accept`` header ask for the MP4 itself rather than the JSON video object? Only when
    it names ``video/mp4`` (or ``video/*``) with a weight at least JSON's; ``*/*``, or no header,
    keeps the OpenAI shape (JSON)."""
    weights: dict[str, float] = {}
    for part in (accept or "").split(","):
        kind, *params = (piece.strip().lower() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[kind] = max(weight, weights.get(kind, 0.0))
    video = max(weights.get("video/mp4", 0.0), weights.get("video/*", 0.0))
    json = max(weights.get("application/json", 0.0), weights.get("application/*", 0.0), weights.get("*/*", 0.0))
    return video > 0 and video >= json


async def mp4_reply(content: Content, job_id: str, headers: dict[str, str]) -> Response:
    """A finished job's MP4 as the answer to the request that made it (one round trip), whatever the
    content delivery: a POST is never redirected to the object store."""
    headers = {"content-location": f"/v1/videos/{job_id}/content", **headers}
    path = content.storage.local_path(content.key)
    if path is not None:
        return FileResponse(path, media_type=content.media_type, headers=headers)
    body = await asyncio.to_thread(content.storage.get, content.key)
    return Response(body, media_type=content.media_type, headers=headers)
