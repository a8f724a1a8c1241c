"""The scheduler: tiers, admission, the priority batcher, deadlines, rate limits, the circuit breaker
and the cost model, behind the few calls the engine makes. Knows nothing of the pipeline or HTTP.

Lifecycle of a job as the scheduler sees it: ``place`` → (result cache, in the engine) →
``check_circuit`` → ``check_share`` → ``plan`` → ``enqueue`` → ``next_batch`` → ``claim`` → ``batch_done`` → ``finished``.
A job that leaves the queue any other way (cancelled, expired) goes through ``dequeue``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import TTLCache

from reelserve.engine.admission import Admission, AdmissionPlan
from reelserve.engine.batcher import Batcher
from reelserve.engine.circuit import CircuitBreaker
from reelserve.engine.cost_model import CallTiming, CostModel
from reelserve.engine.deadlines import DeadlineWatch, Expire
from reelserve.engine.fill_window import FIRST_FILL_WINDOW_S, FillWindow
from reelserve.engine.queue_ledger import QueueLedger
from reelserve.engine.rate_limit import RateLimiter
from reelserve.engine.shares import ReservedShares
from reelserve.engine.tiers import Placement, TierTable
from reelserve.jobs.base import Broker
from reelserve.metrics import Metrics
from reelserve.schemas import GenerationParams, Job, ModelLimits, ReelserveError, VideoCreateRequest
from reelserve.schemas.errors import ErrorCode
from reelserve.schemas.slo import DEFAULT_DEGRADE_LEVELS, DEFAULT_TIERS, DegradeLevel, Tier
from reelserve.schemas.tenants import is_anonymous

log = logging.getLogger(__name__)

_ETA_KEPT = 100_000  # admission estimates kept until their jobs finish (for the estimate-error metric)
_SAVE_EVERY = 10
_RECONCILE_S = 1.0  # shared queue: how often a tenant's held jobs may be checked against the store


@dataclass
class SchedulingOptions:
    tiers: TierTable = field(default_factory=lambda: TierTable(DEFAULT_TIERS, "standard"))
    degrade_levels: Sequence[DegradeLevel] = DEFAULT_DEGRADE_LEVELS
    limiter: RateLimiter | None = field(default_factory=RateLimiter)
    circuit: CircuitBreaker | None = None
    cost_model: CostModel = field(default_factory=CostModel)
    cost_model_path: Path | None = None  # saved every _SAVE_EVERY observations and on stop
    # Other processes share the broker (distributed mode): this one does not see every job start
    # and finish, so it keeps no ledger of the queue and asks the broker for its depth instead.
    shared_queue: bool = False
    # Most of a tier's max_queue one tenant may hold (queued and running), unless its policy says;
    # 1.0: no cap. The anonymous tenant (auth off) is everyone, and is never capped.
    tenant_queue_share: float = 1.0


class Scheduler:
    def __init__(
        self,
        broker: Broker,
        limits: ModelLimits,
        metrics: Metrics,
        options: SchedulingOptions,
        max_batch_size: int,
        max_wait_s: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_wait_s`` None: each batch's fill window is ``fill_window``'s (``engine/fill_window.py``)."""
        self.broker = broker
        self.metrics = metrics
        self.tiers = options.tiers
        self.cost_model = options.cost_model
        self.circuit = options.circuit
        self.cost_model_path = options.cost_model_path
        reserved = {tier.level: tier.reserved_share for tier in self.tiers.tiers.values()}
        self.shares = ReservedShares(reserved)
        self.ledger = QueueLedger(
            self.cost_model.predict, lambda key: self.batcher.limit_for(key), clock, self.cost_model.finish.predict
        )
        self.fill_window = FillWindow(sees_arrivals=not options.shared_queue)
        self.batcher = Batcher(
            broker, max_batch_size, FIRST_FILL_WINDOW_S if max_wait_s is None else max_wait_s, self.ledger.level_of,
            self.shares, window=self.fill_window if max_wait_s is None else None,
        )
        self.admission = Admission(
            self.tiers, self.ledger, limits, options.degrade_levels, options.limiter, reserved, clock,
            served_above=self.shares.share_above, current_shares=lambda: self.shares.current,
            tier_depth=self._shared_tier_depth if options.shared_queue else self.ledger.tier_depth,
        )
        self.shared_queue = options.shared_queue
        self._shared_depth: dict[int, int] = {}  # the broker's depth per level, as of ``refresh_depth``
        self._clock = clock
        self._active: dict[str, dict[str, str]] = {}  # tenant -> its unfinished job ids -> their tiers
        self.tenant_queue_share = options.tenant_queue_share
        # Shared queue: workers finish jobs unseen here. Before a tenant is refused for what it holds,
        # the ids the store says are final are dropped, at most once a second per tenant.
        self.final_among: Callable[[list[str]], Awaitable[set[str]]] | None = None
        self._reconciled: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=_RECONCILE_S, timer=clock)
        self._admission_eta: dict[str, float] = {}
        self._deadlines: DeadlineWatch | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        for tier in self.tiers.tiers.values():
            metrics.tier_queue_depth.labels(tier.name).set_function(
                lambda name=tier.name: self.ledger.tier_depth(name)
            )

    # -- admission ----------------------------------------------------------------------------

    async def reconcile(self, tenant: str | None, tier: Tier | None = None) -> None:
        """Shared queue: before ``tenant`` is refused for what it holds (its concurrent jobs; with
        ``tier``, its share of that tier's queue), drop the jobs the store says are final, which
        workers finished unseen here. At most once a second per tenant."""
        held = self._active.get(tenant or "")
        if not self.shared_queue or self.final_among is None or not held or (tenant or "") in self._reconciled:
            return
        if tier is None:
            limit = self.tiers.policy(tenant).max_concurrent_jobs
            if not limit or len(held) < limit:
                return
        elif (cap := self._share_cap(tenant, tier)) is None or self._held(tenant or "", tier.name) < cap:
            return
        self._reconciled[tenant or ""] = True
        for job_id in await self.final_among(list(held)):
            held.pop(job_id, None)

    def place(self, request: VideoCreateRequest, tenant: str | None) -> Placement:
        try:
            return self.admission.place(request, tenant, len(self._active.get(tenant or "", ())))
        except ReelserveError as error:
            self._count_rejection(error)
            raise

    def check_share(self, tenant: str | None, placement: Placement) -> None:
        """One tenant may hold at most its share of a tier's queue, so a flood from one key leaves
        room for every other key (which the tier's own max_queue alone would not). After the result
        cache: a cached video costs the queue nothing."""
        try:
            self._check_share(tenant, placement)
        except ReelserveError as error:
            self._count_rejection(error)
            raise

    def _share_cap(self, tenant: str | None, tier: Tier) -> int | None:
        """Most jobs of ``tier`` ``tenant`` may hold; None: no cap."""
        if is_anonymous(tenant):
            return None
        share = self.tiers.policy(tenant).queue_share or self.tenant_queue_share
        return None if share >= 1.0 else max(1, math.floor(share * tier.max_queue))

    def _check_share(self, tenant: str | None, placement: Placement) -> None:
        tier = placement.tier
        cap = self._share_cap(tenant, tier)
        if cap is not None and self._held(tenant or "", tier.name) >= cap:
            raise ReelserveError(
                ErrorCode.queue_full,
                f"this API key holds its share of the {tier.name} queue ({cap} of {tier.max_queue} jobs); "
                "retry when some of its jobs finish",
                retry_after=max(1.0, self.ledger.running_remaining()),
            )

    def _limits_holdings(self, tenant: str | None) -> bool:
        policy = self.tiers.policy(tenant)
        share = policy.queue_share or self.tenant_queue_share
        return bool(policy.max_concurrent_jobs) or (share < 1.0 and not is_anonymous(tenant))

    def _held(self, tenant: str, tier: str) -> int:
        return sum(1 for name in self._active.get(tenant, {}).values() if name == tier)

    def check_circuit(self) -> None:
        if self.circuit is None:
            return
        retry_after = self.circuit.admit()
        if retry_after is not None:
            error = ReelserveError(
                ErrorCode.circuit_open,
                "not admitting new work: the last pipeline calls failed; a probe job will test recovery",
                retry_after=retry_after,
            )
            self._count_rejection(error)
            raise error

    def plan(self, params: GenerationParams, placement: Placement) -> AdmissionPlan:
        try:
            plan = self.admission.plan(params, placement)
        except ReelserveError as error:
            self._count_rejection(error)
            raise
        for name in plan.degraded:
            self.metrics.degradations.labels(placement.tier.name, name).inc()
        return plan

    async def refresh_depth(self) -> None:
        """Read the shared queue's depth for the next admission (a no-op for a queue of our own)."""
        if self.shared_queue:
            self._shared_depth = await self.broker.depth_by_level()

    async def depth_by_tier(self) -> dict[str, int]:
        """Jobs not started yet, per tier: the shared queue's undelivered ones, or this process's own."""
        if self.shared_queue:
            await self.refresh_depth()
            return {name: self._shared_tier_depth(name) for name in self.tiers.tiers}
        return {name: self.ledger.tier_depth(name) for name in self.tiers.tiers}

    def _shared_tier_depth(self, tier: str) -> int:
        return self._shared_depth.get(self.tiers.level_of(tier), 0)

    def _count_rejection(self, error: ReelserveError) -> None:
        self.metrics.rejections.labels(error.code.value).inc()

    # -- the queue ----------------------------------------------------------------------------

    def start(self, expire: Expire) -> None:
        """Start failing expired queued jobs (``expire`` decides and records each); idempotent."""
        if self._deadline_task is None:
            self._deadlines = DeadlineWatch(expire, self._clock)
            self._deadline_task = asyncio.create_task(self._deadlines.run(), name="reelserve-deadlines")

    def save_cost_model(self) -> None:
        if self.cost_model_path is None:
            return
        try:
            self.cost_model.save(self.cost_model_path)
        except OSError:
            log.exception("could not save the cost model to %s", self.cost_model_path)

    async def count_queue(self) -> None:
        """Refresh the queue-depth gauge."""
        self.metrics.queue_depth.set(await self.broker.depth())

    async def stop(self) -> None:
        self.save_cost_model()
        if self._deadline_task is not None:
            self._deadline_task.cancel()
            await asyncio.gather(self._deadline_task, return_exceptions=True)
            self._deadline_task = None

    def level_of(self, job: Job) -> int:
        return self.tiers.level_of(job.priority if job.priority in self.tiers.tiers else self.tiers.default_tier)

    async def enqueue(self, job: Job) -> None:
        tier = job.priority if job.priority in self.tiers.tiers else self.tiers.default_tier
        level = self.tiers.level_of(tier)
        if job.deadline_at is not None and self._deadlines is not None:
            self._deadlines.watch(job.id, job.deadline_at)
        self.metrics.admissions.labels(tier).inc()
        if not self.shared_queue or self._limits_holdings(job.tenant):
            # Shared queue: kept only where a limit needs it (finishes are not seen here to drop them).
            self._active.setdefault(job.tenant or "", {})[job.id] = tier
        if self.shared_queue:  # another process runs it: its start and end are never seen here
            await self.broker.put(job.id, job.params.batch_key(), level)
            return
        self.ledger.add(job.id, level, tier, job.params, job.deadline_at)
        self.fill_window.arrived(job.params.batch_key())
        if job.estimated_completion_at is not None and len(self._admission_eta) < _ETA_KEPT:
            self._admission_eta[job.id] = job.estimated_completion_at
        await self.broker.put(job.id, job.params.batch_key(), level)

    async def dequeue(self, job: Job) -> bool:
        """Take a job out of the queue (cancelled, expired); False if it was not queued."""
        removed = await self.broker.discard(job.id)
        self.ledger.remove(job.id)
        if self._deadlines is not None:
            self._deadlines.forget(job.id)
        return removed

    async def next_batch(self) -> list[str]:
        return await self.batcher.collect()

    async def hand_back(self, job_ids: list[str]) -> None:
        """A batch taken but not started goes back to the front of the queue."""
        if job_ids:
            levels = {job_id: self.ledger.level_of(job_id) for job_id in job_ids}
            await self.broker.requeue(job_ids, self.batcher.batch_key, levels)

    async def requeue_parked(self, job: Job) -> None:
        """A running job whose row was parked to make way: back at the front of its level, to resume."""
        level = self.level_of(job)
        if not self.shared_queue:
            tier = job.priority if job.priority in self.tiers.tiers else self.tiers.default_tier
            self.ledger.add(job.id, level, tier, job.params, job.deadline_at)
        await self.broker.requeue([job.id], job.params.batch_key(), {job.id: level})

    def claim(self, job: Job, now: float) -> None:
        """``job`` leaves the queue to run now."""
        self.ledger.remove(job.id)
        if self._deadlines is not None:
            self._deadlines.forget(job.id)
        if job.timings.queue_s is not None:
            self.metrics.tier_queue_wait.labels(job.priority or self.tiers.default_tier).observe(job.timings.queue_s)

    def expired(self, job: Job, now: float) -> bool:
        return job.deadline_at is not None and now >= job.deadline_at

    def batch_started(self, params: GenerationParams, rows: int, lane: int = 0) -> float:
        """Returns the batch's predicted end (epoch seconds)."""
        return self._clock() + self.ledger.start_batch(params, rows, lane)

    def run_lanes(self, lanes: int) -> None:
        """Batches run on ``lanes`` pipeline lanes at once from now on (the estimates share them out)."""
        self.ledger.lanes = lanes

    def predict_finish(self, params: GenerationParams) -> float:
        """Seconds to write one job's outputs after its pipeline call."""
        return self.cost_model.finish.predict(params)

    def outputs_written(self, params: GenerationParams, seconds: float) -> None:
        self.cost_model.finish.observe(params, seconds)

    def batch_done(
        self, batch: list[Job], timings: Sequence[CallTiming], seconds: float, failed: bool, fit: int | None,
        lane: int = 0,
    ) -> None:
        self.ledger.end_batch(lane)
        params = batch[0].params
        if not failed:
            self.fill_window.batch_took(params.batch_key(), seconds)
        for timing in timings:
            self.cost_model.observe(params, timing)
            if self.cost_model.observations() % _SAVE_EVERY == 0:
                self.save_cost_model()
        by_level: dict[int, float] = {}
        for job in batch:
            level = self.level_of(job)
            by_level[level] = by_level.get(level, 0.0) + seconds / len(batch)
        self.shares.set_pressure(
            {level: self.ledger.deadline_pressure(level) * self.admission.slowdown(level) for level in self.shares.reserved}
        )
        queued = self.batcher.queued_by_level if self.shared_queue else self.ledger.depth_by_level()
        self.shares.record(by_level, queued, self.batcher.opened_for)
        if fit is not None:
            self.batcher.lower_limit(params.batch_key(), fit)
        if self.circuit is not None:
            self.circuit.record_failure() if failed else self.circuit.record_success()

    def pipeline_worked(self) -> None:
        """A row of a running batch came out: the circuit closes now, not when the batch ends."""
        if self.circuit is not None:
            self.circuit.record_success()

    def finished(self, job: Job) -> None:
        """``job`` reached a final status, by whatever path: idempotent."""
        held = self._active.get(job.tenant or "")
        if held is not None:
            held.pop(job.id, None)
            if not held:
                del self._active[job.tenant or ""]  # tenants come and go: keep the map to the active ones
        estimate = self._admission_eta.pop(job.id, None)
        if job.completed_at is None or job.cached:
            return
        expired = job.error is not None and job.error.code == ErrorCode.deadline_exceeded
        if estimate is not None and (job.status.value == "completed" or expired):
            self.metrics.estimate_error.observe(abs(job.completed_at - estimate))
            level = self.level_of(job)
            self.admission.calibrate(level, job.completed_at - job.created_at, estimate - job.created_at)
        if job.deadline_at is not None and job.status.value == "completed" and job.completed_at > job.deadline_at:
            self.metrics.deadline_misses.labels(job.priority or "", "completed_late").inc()

    @property
    def ready(self) -> bool:
        return self.circuit is None or self.circuit.ready
