"""Admission control: is there room for this job, can it finish before its deadline, and at what
quality. Every refusal is immediate and says when to come back (``retry_after``).

Order of checks (the engine runs the result cache and the circuit breaker between ``place`` and
``plan``, so a cached video is handed out even when the queue is full or the pipeline is broken):

1. ``place``: tier, deadline, degrade permission; the key's rate limits (429 ``rate_limited``);
2. ``plan``: the tier's queue length (429 ``queue_full``); under a load level that makes the tier
   cache-only, 429 ``cache_only``; then the load level's limits if the request allows degrading,
   and the completion estimate against the deadline: stronger levels when the tier degrades late
   work and the request allows it, else 429 ``deadline_unmeetable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reelserve.engine.degrade import degrade, load_level, stronger_levels
from reelserve.engine.queue_ledger import QueueLedger
from reelserve.engine.rate_limit import RateLimiter
from reelserve.engine.tiers import Placement, TierTable
from reelserve.schemas import Degradation, GenerationParams, ModelLimits, ReelserveError, VideoCreateRequest
from reelserve.schemas.errors import ErrorCode
from reelserve.schemas.slo import DegradeLevel

_MIN_RETRY_S = 1.0


@dataclass
class AdmissionPlan:
    params: GenerationParams
    deadline_at: float
    estimated_completion_at: float
    degraded: dict[str, Degradation] = field(default_factory=dict)
    degraded_reason: str | None = None


class Admission:
    def __init__(
        self,
        tiers: TierTable,
        ledger: QueueLedger,
        limits: ModelLimits,
        degrade_levels: Sequence[DegradeLevel],
        limiter: RateLimiter | None = None,
        reserved_shares: dict[int, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tiers = tiers
        self.ledger = ledger
        self.limits = limits
        self.degrade_levels = list(degrade_levels)
        self.limiter = limiter
        self.reserved_shares = reserved_shares or {}
        self._clock = clock

    def place(self, request: VideoCreateRequest, tenant: str | None, active_jobs: int) -> Placement:
        placement = self.tiers.place(request, tenant)
        policy = self.tiers.policy(tenant)
        if self.limiter is not None and (policy.requests_per_minute or policy.max_concurrent_jobs):
            refused = self.limiter.check(
                tenant or "", policy.requests_per_minute or 0, policy.max_concurrent_jobs or 0, active_jobs
            )
            if refused is not None:
                reason, retry_after = refused
                limit = (
                    f"{policy.requests_per_minute} requests per minute"
                    if reason == "requests_per_minute"
                    else f"{policy.max_concurrent_jobs} concurrent jobs"
                )
                raise ReelserveError(
                    ErrorCode.rate_limited, f"rate limit of this API key reached: {limit}", retry_after=retry_after
                )
        return placement

    def load(self) -> DegradeLevel | None:
        return load_level(self.degrade_levels, self.ledger.queue_delay())

    def plan(self, params: GenerationParams, placement: Placement) -> AdmissionPlan:
        tier = placement.tier
        if self.ledger.tier_depth(tier.name) >= tier.max_queue:
            raise ReelserveError(
                ErrorCode.queue_full,
                f"the {tier.name} queue is full ({tier.max_queue} jobs waiting)",
                retry_after=max(_MIN_RETRY_S, self.ledger.running_remaining()),
            )
        now = self._clock()
        deadline_at = now + placement.deadline_s
        load = self.load()
        if load is not None and tier.name in load.cache_only_tiers:
            raise ReelserveError(
                ErrorCode.cache_only,
                f"the server is at load level '{load.name}': the {tier.name} tier is served from the cache only, "
                "and this request is not cached",
                retry_after=max(_MIN_RETRY_S, self.ledger.queue_delay() - load.min_queue_delay_s),
            )
        candidates: list[tuple[DegradeLevel | None, str | None]] = [(None, None)]
        if placement.allow_degrade:
            candidates = [(load, f"load: {load.name}" if load else None)]
            if tier.on_late == "degrade":
                candidates += [(lvl, f"deadline: {lvl.name}") for lvl in stronger_levels(self.degrade_levels, load)]
        first_eta = None
        for level, reason in candidates:
            run, changes = degrade(params, level, self.limits) if level is not None else (params, {})
            eta = now + self._work_ahead(tier.level, run)
            first_eta = eta if first_eta is None else first_eta
            if eta <= deadline_at:
                return AdmissionPlan(run, deadline_at, eta, changes, reason if changes else None)
        assert first_eta is not None
        raise ReelserveError(
            ErrorCode.deadline_unmeetable,
            f"estimated completion in {first_eta - now:.1f}s is past the deadline of {placement.deadline_s:g}s "
            f"({tier.name} tier); retry later, or with a longer deadline_seconds"
            + ("" if placement.allow_degrade else " or allow_degrade"),
            retry_after=max(_MIN_RETRY_S, first_eta - deadline_at),
        )

    def estimate_completion(self, level: int, params: GenerationParams) -> float:
        return self._clock() + self._work_ahead(level, params)

    def _work_ahead(self, level: int, params: GenerationParams) -> float:
        # Less urgent levels with a reserved share and work queued take their share of the pipeline.
        depth = self.ledger.depth_by_level()
        taken = sum(share for lvl, share in self.reserved_shares.items() if lvl > level and depth.get(lvl, 0))
        return self.ledger.work_ahead(level, params) / (1.0 - min(taken, 0.9))
