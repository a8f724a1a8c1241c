"""Events a job emits while it moves; the SSE stream is a sequence of these."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, Field, PrivateAttr

from reelserve.schemas.jobs import Job, JobError, JobStatus


class EventType(StrEnum):
    queued = "queued"  # waiting; carries queue_position
    progress = "progress"  # one denoising step done; carries step/total_steps
    status = "status"  # status changed (in_progress, or a final status)
    preview = "preview"  # a live preview of the running video; carries step/total_steps and preview


class JobEvent(BaseModel):
    job_id: str
    type: EventType
    status: JobStatus
    progress: int = 0
    queue_position: int | None = None
    step: int | None = None
    total_steps: int | None = None
    error: JobError | None = None
    estimated_completion_at: float | None = None  # epoch seconds, while the job is unfinished
    preview: str | None = None  # a preview event's image, as a data: URL (an animated WebP)
    at: float = Field(default_factory=time.time)
    # The final job itself, on a final event made from it in this process: never serialised, so it
    # goes neither to SSE nor to other processes, and a waiter here need not read the job back.
    _job: Job | None = PrivateAttr(default=None)

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def job(self) -> Job | None:
        return self._job

    def with_job(self, job: Job) -> JobEvent:
        """This event carrying ``job`` (a copy: the sender may go on changing its own)."""
        self._job = job.model_copy(deep=True)
        return self
