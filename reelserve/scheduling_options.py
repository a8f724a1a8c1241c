"""The scheduler's options from the settings: tiers and per-key policies, rate limits, the circuit
breaker and the cost model the last run saved."""

from __future__ import annotations

import logging

from reelserve.api.auth import tenant_id
from reelserve.engine.circuit import CircuitBreaker, CircuitState
from reelserve.engine.cost_model import CostModel
from reelserve.engine.rate_limit import RateLimiter
from reelserve.engine.scheduler import SchedulingOptions
from reelserve.engine.tiers import TierTable
from reelserve.metrics import Metrics
from reelserve.schemas.slo import TenantPolicy
from reelserve.settings import Settings

log = logging.getLogger(__name__)


_CIRCUIT_GAUGE = {CircuitState.closed: 0, CircuitState.half_open: 1, CircuitState.open: 2}


def load_cost_model(settings: Settings) -> CostModel:
    """What the last run learned, so admission estimates are good from the first request; the prior
    when there is nothing (or nothing readable) yet."""
    path = settings.cost_model_path
    if not path.exists():
        return CostModel()
    try:
        return CostModel.load(path)
    except (ValueError, OSError) as exc:
        log.warning("ignoring the saved cost model %s (%s); starting from the prior", path, exc)
        return CostModel()


def circuit_breaker(settings: Settings, metrics: Metrics, model: str) -> CircuitBreaker | None:
    """``model``'s breaker (each model its own: one model's failing weights do not stop another's jobs)."""
    if not settings.circuit_failures:
        return None
    metrics.circuit_state.labels(model=model).set(_CIRCUIT_GAUGE[CircuitState.closed])  # shown from the start
    return CircuitBreaker(
        settings.circuit_failures,
        settings.circuit_cooldown_s,
        probe_timeout_s=max(60.0, settings.circuit_cooldown_s),
        on_change=lambda state: metrics.circuit_state.labels(model=model).set(_CIRCUIT_GAUGE[state]),
    )


def scheduling(settings: Settings, metrics: Metrics) -> SchedulingOptions:
    """Tiers, per-key policies (keyed by tenant id, so raw keys are not kept), limits and the breaker."""
    default_policy = TenantPolicy(
        requests_per_minute=settings.rate_limit_rpm,
        max_concurrent_jobs=settings.rate_limit_concurrent,
        webhook_secret=settings.webhook_secret,
    )
    tiers = TierTable(
        settings.tiers,
        settings.default_tier,
        tenants={tenant_id(key): policy for key, policy in settings.tenants.items()},
        default_policy=default_policy,
    )
    return SchedulingOptions(
        tenant_queue_share=settings.tenant_queue_share,
        tiers=tiers,
        degrade_levels=settings.degrade_levels,
        limiter=RateLimiter(),
        circuit=circuit_breaker(settings, metrics, settings.model),
        cost_model=load_cost_model(settings),
        cost_model_path=settings.cost_model_path,
    )
