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
    """The first problem, naming its field, in plain words: e.g. ``prompt: must not be empty``."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    # A union's member type shows up in the location (``seconds.float``): the user sent ``seconds``.
    location = [part for part in location if part not in _UNION_MEMBERS]
    param = ".".join(location) or None
    message = plain_message(first)
    return ReelserveError(
        ErrorCode.invalid_parameter, f"{param}: {message}" if param else message, param=param
    )


_UNION_MEMBERS = {"float", "int", "str", "bool", "function-after[_seconds_as_openai_spells_it(), float]"}
# pydantic's error types, said the way a user needs them: what to send.
_PLAIN = {
    "missing": "required; send it",
    "extra_forbidden": "unknown field; see GET /v1/models or /docs for the fields",
    "string_too_short": "must not be empty",
    "int_type": "must be a whole number (a JSON number without a fraction, not text)",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number, without a fraction",
    "float_type": "must be a number (a JSON number, not text)",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number (not Infinity or NaN)",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def plain_message(error: Any) -> str:
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters; got {len(str(error.get('input', '')))}"
    bounds = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
              "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        shown = f"{limit:g}" if isinstance(limit, float) else limit
        return f"must be {bounds[kind]} {shown}; got {error.get('input')}"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "invalid value")))
    message = str(error.get("msg", "invalid value"))
    return message.replace("Input should be", "must be", 1)  # e.g. literal_error: must be 'video' or 'thumbnail'



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
