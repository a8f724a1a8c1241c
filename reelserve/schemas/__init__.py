"""The one typed vocabulary every layer speaks: requests, jobs, events, errors."""

from reelserve.schemas.errors import ErrorCode, ErrorResponse, ReelserveError, invalid
from reelserve.schemas.events import EventType, JobEvent
from reelserve.schemas.jobs import (
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    Degradation,
    Job,
    JobError,
    JobStatus,
    Timings,
)
from reelserve.schemas.requests import (
    MAX_PROMPT_CHARS,
    CacheOptions,
    GenerationParams,
    ModelLimits,
    Role,
    VideoCreateRequest,
    resolve_request,
)
from reelserve.schemas.webhooks import WebhookDelivery, WebhookStatus

__all__ = [
    "FINAL_STATUSES",
    "MAX_PROMPT_CHARS",
    "UNFINISHED_STATUSES",
    "CacheOptions",
    "Degradation",
    "ErrorCode",
    "ErrorResponse",
    "EventType",
    "GenerationParams",
    "Job",
    "JobError",
    "JobEvent",
    "JobStatus",
    "ModelLimits",
    "Role",
    "ReelserveError",
    "Timings",
    "VideoCreateRequest",
    "WebhookDelivery",
    "WebhookStatus",
    "invalid",
    "resolve_request",
]
