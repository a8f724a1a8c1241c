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
    invalid_range = "invalid_range"  # a malformed Range header
    range_not_satisfiable = "range_not_satisfiable"  # a Range that selects no byte of the file
    payload_too_large = "payload_too_large"  # the body is over the server's limit
    request_timeout = "request_timeout"  # the body did not arrive in time
    not_ready = "not_ready"
    generation_failed = "generation_failed"
    interrupted = "interrupted"
    internal_error = "internal_error"
    # Admission (answered at once, with Retry-After) and job failures of the scheduler.
    queue_full = "queue_full"  # the tier's queue is at its maximum length
    deadline_unmeetable = "deadline_unmeetable"  # estimated completion is past the deadline
    rate_limited = "rate_limited"  # the API key's requests per minute or concurrent jobs
    cache_only = "cache_only"  # under overload this tier is served from the cache only, and this missed
    circuit_open = "circuit_open"  # consecutive pipeline failures: not admitting until a probe succeeds
    deadline_exceeded = "deadline_exceeded"  # a queued job's deadline passed before it could run
    out_of_memory = "out_of_memory"  # the job does not fit on the device even alone
    worker_lost = "worker_lost"  # the workers running the job died (or stalled) too many times
    unavailable = "unavailable"  # a backing service (the distributed mode's Redis) cannot be reached


# The HTTP layer maps codes to statuses once, here, so no route picks its own.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.invalid_request: 400,
    ErrorCode.invalid_parameter: 422,
    ErrorCode.unknown_model: 422,
    ErrorCode.unauthorized: 401,
    ErrorCode.forbidden: 403,
    ErrorCode.not_found: 404,
    ErrorCode.conflict: 409,
    ErrorCode.invalid_range: 400,
    ErrorCode.range_not_satisfiable: 416,
    ErrorCode.payload_too_large: 413,
    ErrorCode.request_timeout: 408,
    ErrorCode.not_ready: 503,
    ErrorCode.generation_failed: 500,
    ErrorCode.interrupted: 500,
    ErrorCode.internal_error: 500,
    ErrorCode.queue_full: 429,
    ErrorCode.deadline_unmeetable: 429,
    ErrorCode.rate_limited: 429,
    ErrorCode.cache_only: 429,
    ErrorCode.circuit_open: 503,
    ErrorCode.deadline_exceeded: 504,
    ErrorCode.out_of_memory: 507,
    ErrorCode.worker_lost: 500,
    ErrorCode.unavailable: 503,
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

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after  # seconds; sent as the Retry-After header
        self.headers = headers or {}  # more response headers, e.g. a 416's Content-Range

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(code=self.code.value, message=self.message, param=self.param))


def invalid(param: str, message: str) -> ReelserveError:
    return ReelserveError(ErrorCode.invalid_parameter, message, param=param)


def job_not_found(job_id: str) -> ReelserveError:
    """What an unknown job id, and another tenant's job, both answer: the same words, so a job's
    existence never leaks."""
    return ReelserveError(ErrorCode.not_found, f"no video with id '{job_id}'", param="video_id")
