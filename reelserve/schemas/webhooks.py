"""Where a job's webhook stands: kept on the job and shown in its video object."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class WebhookStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookDelivery(BaseModel):
    """Where one webhook message stands. Holds no secret."""

    url: str
    status: WebhookStatus = WebhookStatus.pending
    attempts: int = 0
    last_status_code: int | None = None  # None when the last attempt got no HTTP response
    last_error: str | None = None  # None after a successful attempt
    next_attempt_at: float | None = None  # Unix seconds; set only while a retry is scheduled
    delivered_at: float | None = None  # Unix seconds
