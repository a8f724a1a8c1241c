"""Service-level configuration: priority tiers, what each API key may use, and the load-based
degradation table. Settings parse these; the engine's scheduler enforces them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Tier(BaseModel):
    """A priority class of requests. Lower ``level`` runs first; within a tier, first in, first out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    level: int = Field(ge=0, description="0 runs before 1, and so on")
    default_deadline_s: float = Field(gt=0, description="deadline of a request that gives none")
    max_deadline_s: float = Field(gt=0, description="the longest deadline a request may ask for")
    max_queue: int = Field(ge=1, description="queued jobs of this tier; one more is answered 429")
    on_late: Literal["reject", "degrade"] = Field(
        "reject", description="when the estimate is past the deadline: reject, or degrade if the request allows"
    )
    allow_degrade: bool = Field(False, description="default of the request's allow_degrade")
    reserved_share: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of pipeline time kept for this tier while it has work queued"
    )

    @model_validator(mode="after")
    def _deadlines_ordered(self) -> Tier:
        if self.default_deadline_s > self.max_deadline_s:
            raise ValueError(f"tier {self.name}: default_deadline_s is above max_deadline_s")
        return self


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(name="realtime", level=0, default_deadline_s=120, max_deadline_s=600, max_queue=64, on_late="degrade"),
    Tier(name="standard", level=1, default_deadline_s=900, max_deadline_s=3600, max_queue=1024, reserved_share=0.1),
    Tier(
        name="batch", level=2, default_deadline_s=86_400, max_deadline_s=7 * 86_400, max_queue=100_000,
        allow_degrade=True, reserved_share=0.05,
    ),
)


class TenantPolicy(BaseModel):
    """What one API key may do. Unset fields fall back to the server-wide defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str | None = Field(None, description="tier of requests that name none")
    allowed_tiers: list[str] | None = Field(None, description="tiers a request may name; None: every tier")
    requests_per_minute: int | None = Field(None, ge=0, description="0: unlimited")
    max_concurrent_jobs: int | None = Field(None, ge=0, description="queued + running jobs; 0: unlimited")
    queue_share: float | None = Field(
        None, gt=0, le=1, description="most of a tier's max_queue this key may hold; None: the server's share"
    )
    webhook_secret: str | None = Field(
        None, description="whsec_<base64> key that signs this key's webhooks; None: the server's --webhook-secret"
    )


class DegradeLevel(BaseModel):
    """One row of the degradation table: at or above ``min_queue_delay_s`` of estimated queue delay,
    requests that allow it run with at most these steps and frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_queue_delay_s: float = Field(ge=0)
    max_steps: int | None = Field(None, ge=1)
    max_frames: int | None = Field(None, ge=1, description="the longest valid frame count up to this is used")
    cache_only_tiers: list[str] = Field(default_factory=list, description="tiers answered from the cache only")


DEFAULT_DEGRADE_LEVELS: tuple[DegradeLevel, ...] = (
    DegradeLevel(name="high", min_queue_delay_s=60, max_steps=20, max_frames=12),
    DegradeLevel(name="overload", min_queue_delay_s=240, max_steps=15, max_frames=8, cache_only_tiers=["batch"]),
)
