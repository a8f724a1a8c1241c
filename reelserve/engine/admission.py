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
from collections import deque
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
# How fast a slowdown factor follows measurements: each job moves it by this power of its ratio.
_CALIBRATION_RATE = 0.1
# Never below 1: a job done sooner than estimated was a lucky gap in more urgent traffic (the estimate
# assumes the worst share it is owed), and counting on that luck admits work a steady flood then starves.
_SLOWDOWN_RANGE = (1.0, 10.0)
# More urgent work keeps arriving while a job waits; its rate is measured over this window.
_DEMAND_WINDOW_S = 10.0
_MIN_AVAILABLE = 0.02  # the least share of the pipeline a level is assumed to get (never divide by 0)


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
        served_above: Callable[[int], float] = lambda level: 0.0,
        current_shares: Callable[[], dict[int, float]] | None = None,
        tier_depth: Callable[[str], int] | None = None,
    ) -> None:
        # Seconds before the model could run, for its weights alone (0: on the device; several models
        # behind one server: ``models/residency.py``).
        self.swap_cost: Callable[[], float] = lambda: 0.0
        self.tiers = tiers
        self.ledger = ledger
        self.limits = limits
        self.degrade_levels = list(degrade_levels)
        self.limiter = limiter
        self.reserved_shares = reserved_shares or {}
        self._clock = clock
        # Per level, measured end-to-end time over estimated, as a running geometric mean: the cost
        # model knows pipeline calls only, while encoding, storage and a busy HTTP front end share the
        # machine, and each level's errors differ (a reserved share is served in bursts).
        self.slowdowns: dict[int, float] = {}
        self._served_above = served_above  # share of recent pipeline time more urgent levels actually got
        # Shares less urgent levels get now: raised while their queued jobs' deadlines need more.
        self._current_shares = current_shares or (lambda: self.reserved_shares)
        self._tier_depth = tier_depth or ledger.tier_depth  # jobs waiting per tier, for the queue cap
        self._demand: deque[tuple[float, int, float]] = deque()  # (when, level, pipeline seconds) asked for

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
        self._record_demand(tier.level, params)
        if self._tier_depth(tier.name) >= tier.max_queue:
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
        swap = self.swap_cost()
        raise ReelserveError(
            ErrorCode.deadline_unmeetable,
            f"estimated completion in {first_eta - now:.1f}s is past the deadline of {placement.deadline_s:g}s "
            f"({tier.name} tier)" + (f", {swap:.2f}s of it to bring the model onto the device" if swap else "")
            + "; retry later, or with a longer deadline_seconds"
            + ("" if placement.allow_degrade else " or allow_degrade"),
            retry_after=max(_MIN_RETRY_S, first_eta - deadline_at),
        )

    def slowdown(self, level: int) -> float:
        return self.slowdowns.get(level, 1.0)

    def calibrate(self, level: int, actual_s: float, estimated_s: float) -> None:
        """A job of ``level`` took ``actual_s`` from acceptance to its end where ``estimated_s`` was
        expected (an expired job's actual is how long it waited: at least that)."""
        if estimated_s <= 0.01 or actual_s <= 0:
            return
        factor = self.slowdown(level) * (actual_s / estimated_s) ** _CALIBRATION_RATE
        self.slowdowns[level] = min(max(factor, _SLOWDOWN_RANGE[0]), _SLOWDOWN_RANGE[1])

    def estimate_completion(self, level: int, params: GenerationParams) -> float:
        return self._clock() + self._work_ahead(level, params)

    def _work_ahead(self, level: int, params: GenerationParams) -> float:
        """Seconds until a new job is done, the sooner of two bounds:

        - by priority: the work at its level or more urgent, stretched by the pipeline share that
          more urgent demand (at its recent rate) and less urgent reserved shares take meanwhile;
        - by its level's reserved share r: the work of its own level at r of the pipeline;

        then writing its batch's outputs.
        """
        depth = self.ledger.depth_by_level()
        reserved_below = sum(s for lvl, s in self._current_shares().items() if lvl > level and depth.get(lvl, 0))
        # Demand sees a flood as it starts; the served share sees what the flood really takes.
        urgent = max(self._urgent_demand(level), self._served_above(level))
        available = max(1.0 - urgent - reserved_below, _MIN_AVAILABLE)
        seconds = self.ledger.work_ahead(level, params) / available
        share = self.reserved_shares.get(level, 0.0)
        if share > 0:
            seconds = min(seconds, self.ledger.work_at(level, params) / share)
        # Its batch's outputs are written one by one after the call: at worst it is the last row.
        seconds += self.ledger.finish(params) * max(1, self.ledger.batch_limit(params.batch_key()))
        seconds += self.swap_cost()  # the model's weights brought onto the device first, if they are off it
        return self.slowdown(level) * seconds

    def _record_demand(self, level: int, params: GenerationParams) -> None:
        """Remember the pipeline time a request asks for (its share of a full batch), admitted or not:
        a more urgent tier refused now comes back as soon as there is room, and takes that room."""
        rows = max(1, self.ledger.batch_limit(params.batch_key()))
        self._demand.append((self._clock(), level, self.ledger.predict(params, rows) / rows))

    def _urgent_demand(self, level: int) -> float:
        """Pipeline seconds per second asked for recently at levels more urgent than ``level``: the
        higher of the last second's rate and the whole window's, so a flood counts within a second
        of its start even after a long calm, and a lull between bursts does not hide them."""
        now = self._clock()
        while self._demand and self._demand[0][0] < now - _DEMAND_WINDOW_S:
            self._demand.popleft()
        if not self._demand:
            return 0.0
        urgent = [(when, seconds) for when, lvl, seconds in self._demand if lvl < level]
        last_second = sum(seconds for when, seconds in urgent if when >= now - 1.0)
        span = max(1.0, min(_DEMAND_WINDOW_S, now - self._demand[0][0]))
        return max(last_second, sum(seconds for _, seconds in urgent) / span)
