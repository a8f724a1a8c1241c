"""What the probe observed: one ``RequestRecord`` per request sent, one ``QueueSample`` per /metrics scrape.

Times ending in ``_s`` without another meaning are seconds from the start of the run (client clock).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# A job the server no longer knows (404 while polling): final, but nothing more can be learnt.
LOST = "lost"


class RequestRecord(BaseModel):
    index: int
    tier: str = Field(description="the requested priority, or 'default' when none was sent")
    repeat_of: int | None = Field(default=None, description="index of the request whose body was resent")
    scheduled_s: float = Field(description="the planned arrival offset")
    sent_s: float = Field(description="when the POST started (after scheduled_s if the client lagged)")
    deadline_seconds: float | None = Field(default=None, description="the deadline_seconds sent, if any")
    # The POST's answer. No http_status and a transport_error: the request never got an answer.
    http_status: int | None = None
    transport_error: str | None = None
    error_code: str | None = Field(default=None, description="a rejection's error.code")
    retry_after_s: float | None = Field(default=None, description="a rejection's Retry-After, parsed")
    has_retry_after: bool = False
    # The job, for an accepted request. final_status None: still unfinished when the run ended.
    job_id: str | None = None
    priority: str | None = Field(default=None, description="the tier the server placed the job in")
    final_status: str | None = None
    job_error_code: str | None = None
    finished_s: float | None = Field(default=None, description="when the probe first saw the final status")
    queue_s: float | None = Field(default=None, description="server: acceptance to start")
    total_s: float | None = Field(default=None, description="server: acceptance to completion")
    cached: bool = False
    degraded: dict[str, Any] | None = Field(default=None, description="field -> {requested, ran}")
    deadline_at: float | None = Field(default=None, description="server clock, epoch seconds")
    created_at: int | None = None
    completed_at: int | None = None

    @property
    def accepted(self) -> bool:
        return self.http_status == 200

    @property
    def rejected(self) -> bool:
        return self.http_status is not None and self.http_status != 200

    @property
    def e2e_s(self) -> float | None:
        """Client-observed seconds from sending to seeing the final status (plus up to a poll interval)."""
        return None if self.finished_s is None else self.finished_s - self.sent_s

    @property
    def deadline_missed(self) -> bool:
        """Failed with deadline_exceeded, or completed after its deadline.

        The server's own budget is ``deadline_at - created_at``, but the video object's ``created_at`` is
        whole seconds, which can hide a miss of up to a second; the ``deadline_seconds`` this request sent
        is exact unless the server lowered it (to the tier's maximum), hence the smaller of the two."""
        if self.final_status == "failed":
            return self.job_error_code == "deadline_exceeded"
        if self.final_status != "completed" or self.cached or self.total_s is None:
            return False
        budgets = [self.deadline_seconds] if self.deadline_seconds is not None else []
        if self.deadline_at is not None and self.created_at is not None:
            budgets.append(self.deadline_at - self.created_at)
        late_by_clock = (
            self.deadline_at is not None
            and self.completed_at is not None
            and self.completed_at > self.deadline_at
        )
        return late_by_clock or (bool(budgets) and self.total_s > min(budgets))

    def apply_video(self, video: dict[str, Any], now_s: float) -> None:
        """Take in a video object (the POST's answer or a poll's)."""
        self.job_id = video.get("id", self.job_id)
        self.priority = video.get("priority")
        self.cached = bool(video.get("cached"))
        self.degraded = video.get("degraded") or None
        self.deadline_at = video.get("deadline_at")
        self.created_at = video.get("created_at")
        self.completed_at = video.get("completed_at")
        timings = video.get("timings") or {}
        self.queue_s = timings.get("queue_s")
        self.total_s = timings.get("total_s")
        status = video.get("status")
        if status in FINAL_STATUSES and self.final_status is None:
            self.final_status = status
            self.finished_s = now_s
            self.job_error_code = (video.get("error") or {}).get("code")


class QueueSample(BaseModel):
    """One scrape of /metrics: queue depth in total and per tier (empty without a per-tier gauge)."""

    t_s: float
    total: float | None = None
    by_tier: dict[str, float] = Field(default_factory=dict)
