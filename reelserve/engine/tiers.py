"""Which tier a request runs in, by when it must finish, and whether it may be degraded.

The tier comes from the request's ``priority`` when the caller's API key allows that tier, else
from the key's own tier, else from the server's default tier.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reelserve.schemas import ReelserveError, VideoCreateRequest, invalid
from reelserve.schemas.errors import ErrorCode
from reelserve.schemas.slo import TenantPolicy, Tier


@dataclass(frozen=True)
class Placement:
    tier: Tier
    deadline_s: float
    allow_degrade: bool


class TierTable:
    """
    :param tenants: tenant id (the sha256 of an API key, see ``api.auth.tenant_id``) -> its policy.
    """

    def __init__(
        self,
        tiers: Iterable[Tier],
        default_tier: str,
        tenants: dict[str, TenantPolicy] | None = None,
        default_policy: TenantPolicy | None = None,
    ) -> None:
        self.tiers = {tier.name: tier for tier in sorted(tiers, key=lambda t: t.level)}
        if not self.tiers:
            raise ValueError("at least one tier is needed")
        if default_tier not in self.tiers:
            raise ValueError(f"default tier {default_tier!r} is not one of {list(self.tiers)}")
        self.default_tier = default_tier
        self.tenants = tenants or {}
        self.default_policy = default_policy or TenantPolicy()
        for tenant, policy in self.tenants.items():
            for name in [policy.tier, *(policy.allowed_tiers or [])]:
                if name is not None and name not in self.tiers:
                    raise ValueError(f"tenant {tenant[:12]}…: tier {name!r} is not one of {list(self.tiers)}")

    def policy(self, tenant: str | None) -> TenantPolicy:
        """The tenant's own policy, with unset fields taken from the default policy."""
        own = self.tenants.get(tenant or "")
        if own is None:
            return self.default_policy
        merged = {k: v for k, v in self.default_policy.model_dump().items()}
        merged.update({k: v for k, v in own.model_dump().items() if v is not None})
        return TenantPolicy(**merged)

    def level_of(self, tier_name: str) -> int:
        return self.tiers[tier_name].level

    def place(self, request: VideoCreateRequest, tenant: str | None) -> Placement:
        policy = self.policy(tenant)
        allowed = policy.allowed_tiers if policy.allowed_tiers is not None else list(self.tiers)
        if request.priority is not None:
            if request.priority not in self.tiers:
                raise invalid("priority", f"priority: must be one of {', '.join(self.tiers)}; got {request.priority!r}")
            if request.priority not in allowed:
                raise ReelserveError(
                    ErrorCode.forbidden,
                    f"this API key may use priority {', '.join(allowed)}; not {request.priority!r}",
                    param="priority",
                )
            tier = self.tiers[request.priority]
        else:
            tier = self.tiers[policy.tier or self.default_tier]
        deadline = request.deadline_seconds if request.deadline_seconds is not None else tier.default_deadline_s
        if deadline > tier.max_deadline_s:
            raise invalid(
                "deadline_seconds",
                f"deadline_seconds: at most {tier.max_deadline_s:g} for the {tier.name} tier; got {deadline:g}",
            )
        allow = request.allow_degrade if request.allow_degrade is not None else tier.allow_degrade
        return Placement(tier=tier, deadline_s=deadline, allow_degrade=allow)
