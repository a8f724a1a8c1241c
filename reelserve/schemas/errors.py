"""Errors as values: a code a client can branch on, a message a person can act on."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class ErrorCode(StrEnum):
    invalid_request = "invalid_request"
    invalid_parameter = "invalid_parameter"
    unknown_model = "unknown_model"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    not_found = "not_found"
    conflict = "conflict"
    not_ready = "not_ready"
    generation_failed = "generation_failed"
    interrupted = "interrupted"
    internal_error = "internal_error"


# The HTTP layer maps codes to statuses once, here, so no route picks its own.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.invalid_request: 400,
    ErrorCode.invalid_parameter: 422,
    ErrorCode.unknown_model: 422,
    ErrorCode.unauthorized: 401,
    ErrorCode.forbidden: 403,
    ErrorCode.not_found: 404,
    ErrorCode.conflict: 409,
    ErrorCode.not_ready: 503,
    ErrorCode.generation_failed: 500,
    ErrorCode.interrupted: 500,
    ErrorCode.internal_error: 500,
}


class ErrorBody(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    """The one error shape every endpoint returns: ``{"error": {code, message, param}}``."""

    error: ErrorBody


class ReelserveError(Exception):
    """An error a caller can act on; ``param`` names the offending request field, if any."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(code=self.code.value, message=self.message, param=self.param))


def invalid(param: str, message: str) -> ReelserveError:
    return ReelserveError(ErrorCode.invalid_parameter, message, param=param)
