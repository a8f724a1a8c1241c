"""A job: one accepted request and everything that happened to it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from reelserve.schemas.requests import GenerationParams, Role
from reelserve.schemas.webhooks import WebhookDelivery


JOB_ID_PATTERN = r"^video_[0-9a-f]{32}$"  # what ``Job.id`` makes: routes match only this shape


class JobStatus(StrEnum):
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})
UNFINISHED_STATUSES = frozenset({JobStatus.queued, JobStatus.in_progress})


class JobError(BaseModel):
    code: str
    message: str


class Timings(BaseModel):
    """Seconds spent in each stage; ``None`` until the stage has happened."""

    queue_s: float | None = None
    inference_s: float | None = None
    encode_s: float | None = None
    total_s: float | None = None
    first_preview_s: float | None = None  # from creation to the first live preview
    swap_s: float | None = None  # bringing the model's weights onto the device before its batch (several models)


class Degradation(BaseModel):
    """One parameter the server lowered under load: what was asked and what ran."""

    requested: int
    ran: int


class Job(BaseModel):
    id: str = Field(default_factory=lambda: f"video_{uuid.uuid4().hex}")
    params: GenerationParams
    status: JobStatus = JobStatus.queued
    progress: int = Field(default=0, ge=0, le=100)
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    error: JobError | None = None
    timings: Timings = Field(default_factory=Timings)
    batch_size: int | None = None
    attempts: int = 0
    preempted: int = 0  # times its running row was parked to make way for more urgent work
    # Internal: where a draining worker left its parked row (storage key), for the next run to resume.
    parked_key: str | None = None
    video_key: str | None = None
    thumbnail_key: str | None = None
    # A cache hit: a completed copy of job ``cache_source_id``'s video. Similarity and matched prompt
    # (normalised) only for a semantic hit, where the cached prompt differs from this one.
    cached: bool = False
    cache_source_id: str | None = None
    cache_similarity: float | None = None
    cache_matched_prompt: str | None = None
    # Internal, never in the video object: what to store in the cache when this job completes
    # (None: not cacheable), and whether its prompt matched a sensitive-data rule.
    cache_key: str | None = None
    cache_signature: str | None = None  # signature_hash, for the semantic index
    cache_semantic: bool = False  # index the prompt's embedding too (the request was semantic)
    sensitive: bool = False
    # Scheduling: the tier it queued in, when it must be done by, when the server expects it done,
    # and what was lowered to admit it (``degraded_reason`` says why: a load level, or the deadline).
    priority: str | None = None
    deadline_at: float | None = None
    estimated_completion_at: float | None = None
    degraded: dict[str, Degradation] | None = None
    degraded_reason: str | None = None
    tenant: str | None = None  # internal: whose concurrent-job limit this counts against
    # Where the final state is POSTed, and how that delivery stands.
    webhook_url: str | None = None
    webhook: WebhookDelivery | None = None
    # The acceleration options the video is (or will be) made with, e.g. "cfg_batching".
    accelerations: list[str] = Field(default_factory=list)
    # A remix: the video it re-draws (OpenAI's field). Until ``expires_at`` a completed job keeps its
    # final latents, so a remix of it starts from them; after, a remix re-encodes its MP4.
    remixed_from_video_id: str | None = None
    expires_at: float | None = None
    # Things the user should know about how the video was made, e.g. a prompt the model may not follow.
    warnings: list[str] = Field(default_factory=list)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """A sensitive job's repr hides its prompts, so logging a job can never print them."""
        for name, value in super().__repr_args__():
            if name == "params" and self.sensitive:
                value = value.model_copy(update={"prompt": "<redacted>", "negative_prompt": "<redacted>"})
            yield name, value

    def to_video_object(self) -> dict[str, Any]:
        """The OpenAI ``video`` object, plus reelserve's own fields."""
        p = self.params
        return {
            "id": self.id,
            "object": "video",
            "model": p.model,
            "status": self.status.value,
            "progress": self.progress,
            "created_at": int(self.created_at),
            "completed_at": int(self.completed_at) if self.completed_at is not None else None,
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
            "remixed_from_video_id": self.remixed_from_video_id,
            "size": p.size,
            "seconds": p.seconds,
            **p.model_dump(mode="json", include=set(GenerationParams.fields_with(Role.PUBLIC))),
            "error": self.error.model_dump() if self.error else None,
            "batch_size": self.batch_size,
            "attempts": self.attempts,
            "preempted": self.preempted,
            "timings": self.timings.model_dump(),
            "cached": self.cached,
            "cache_source_id": self.cache_source_id,
            "priority": self.priority,
            "deadline_at": self.deadline_at,
            "estimated_completion_at": self.estimated_completion_at,
            "degraded": {k: v.model_dump() for k, v in self.degraded.items()} if self.degraded else None,
            "degraded_reason": self.degraded_reason,
            "warnings": list(self.warnings),
            "webhook_url": self.webhook_url,
            "webhook": self.webhook.model_dump() if self.webhook else None,
            "accelerations": list(self.accelerations),
            **(
                {"cache_similarity": self.cache_similarity, "cache_matched_prompt": self.cache_matched_prompt}
                if self.cache_similarity is not None
                else {}
            ),
        }
