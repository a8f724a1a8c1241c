"""Handing out a stored video or thumbnail: a presigned URL (a redirect, so the bytes never pass
through the API), a local file (sendfile, with Range from Starlette), or the storage's bytes with
single-range support done here (S3 through the API)."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from reelserve.engine.service import Content

ContentDelivery = Literal["api", "presigned"]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def content_response(content: Content, request: Request, delivery: ContentDelivery, presign_ttl_s: int) -> Response:
    storage = content.storage
    presign = getattr(storage, "presigned_url", None)
    if delivery == "presigned" and presign is not None:
        # 307 keeps the method; clients and browsers follow it to the object store.
        return RedirectResponse(presign(content.key, presign_ttl_s), status_code=307)
    path = storage.local_path(content.key)
    if path is not None:
        return FileResponse(path, media_type=content.media_type)
    size = storage.size(content.key)
    wanted = _byte_range(request.headers.get("range"), size)
    headers = {"accept-ranges": "bytes"}
    if wanted is None:
        return Response(storage.get(content.key), media_type=content.media_type, headers=headers)
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = wanted
    return Response(
        storage.read_range(content.key, start, end),
        status_code=206,
        media_type=content.media_type,
        headers={**headers, "content-range": f"bytes {start}-{end}/{size}"},
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range, clipped to the object; None (the whole object) for
    no header or one this does not serve (several ranges, other units), as RFC 9110 allows."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return start, end
