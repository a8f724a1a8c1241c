"""Maps every failure to the one error shape ``{"error": {code, message, param}}``, once."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Scope

from reelserve.schemas import ErrorCode, ErrorResponse, ReelserveError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    401: ErrorCode.unauthorized, 403: ErrorCode.forbidden, 404: ErrorCode.not_found, 409: ErrorCode.conflict,
    413: ErrorCode.payload_too_large,
}
_STATUS_MEANING = {
    400: "the body or a header is malformed (not JSON, a bad Range)",
    401: "missing or invalid API key",
    403: "the key may not do this (the admin API is disabled, or a priority the key may not use)",
    404: "no such video (or not the caller's)",
    408: "the request's body did not arrive in time",
    409: "the video is not completed yet",
    413: "the body is over the server's limit",
    416: "the Range selects no byte of the file",
    422: "a parameter is invalid; error.param names it",
    429: "refused by admission (queue full, rate limit, deadline, cache-only); see Retry-After",
    503: "not ready, circuit open, or the job store unreachable; see Retry-After",
}
# What a request the client abandoned is counted as (nginx's convention); nobody receives it.
CLIENT_CLOSED_REQUEST = 499


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status with the one error schema."""
    return {status: {"model": ErrorResponse, "description": _STATUS_MEANING[status]} for status in statuses}


def error_response(error: ReelserveError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = {**error.headers, **(headers or {})} if error.headers else headers
    if error.retry_after is not None:  # whole seconds, rounded up: a client retrying early is refused again
        headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return JSONResponse(error.body().model_dump(), status_code=error.http_status, headers=headers)


def validation_error(exc: ValidationError | RequestValidationError) -> ReelserveError:
    """The first problem, naming its field, e.g. ``prompt: String should have at least 1 character``."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return ReelserveError(
        ErrorCode.invalid_parameter, f"{param}: {message}" if param else message, param=param
    )


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of ``app`` answers at this path: each is tried against the routes' own
    matching (included routers nest their routes, so reading ``methods`` off the top level misses them)."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ReelserveError)
    async def _reelserve(_: Request, exc: ReelserveError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.invalid_request)
        headers = dict(getattr(exc, "headers", None) or {})
        message = str(exc.detail)
        if exc.status_code == 405:
            # Starlette names the methods of the first route with this path; a path may have several.
            allowed = allowed_methods(app, request.scope)
            headers.pop("Allow", None)
            headers["allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        body = ReelserveError(code, message).body().model_dump()
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client went away (or a read timeout closed it) mid-body: nothing to answer, nothing failed.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(ReelserveError(ErrorCode.internal_error, "internal server error"))
