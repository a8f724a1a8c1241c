"""``BodyLimitMiddleware``: a request body over the limit is answered 413 before it is read in full.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a chunked
body is counted as it arrives and refused once past the limit, so memory never holds more than the
limit. The connection stays open after the 413 and the rest of the upload is read and dropped (within
the body deadline, ``http_server``): closing at once would reset the connection under the client's
feet, and most clients would then report a reset instead of the 413.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelserve.api.errors import error_response
from reelserve.schemas import ErrorCode, ReelserveError


def too_large(limit: int) -> ReelserveError:
    return ReelserveError(
        ErrorCode.payload_too_large,
        f"the request body is over this server's limit of {limit} bytes; send a smaller body",
        param="body",
    )


# The routes that take uploads (a first frame, a clip to re-draw, an adapter) get the upload limit; every other
# body stays small. What each input may be is checked again, field by field, once the body is read.
UPLOAD_PATHS = frozenset({"/v1/videos", "/v1/videos/sync", "/v1/admin/adapters"})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max(max_body_bytes, max_upload_bytes or max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        uploads = scope["method"] == "POST" and scope["path"].rstrip("/") in UPLOAD_PATHS
        limit = self.max_upload_bytes if uploads else self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(too_large(limit))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)  # the app's error handler answers it, in the usual shape
            return message

        await self.app(scope, counted, send)
