"""What the load probe sends and when: ``LoadConfig`` and the arrival plan computed from it.

The plan is a pure function of the config (its ``seed`` above all): two runs with the same config send
the same bodies at the same offsets, whatever the server does, so runs can be compared.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Requests sent without a ``priority`` are reported under this tier label.
UNTIERED = "default"
# The seed field's upper bound on the server (``VideoCreateRequest.seed``).
_MAX_SEED = 2**63 - 1
# Body fields the probe sets itself from dedicated config fields; ``params`` may not override them.
_RESERVED_PARAMS = frozenset({"prompt", "priority", "deadline_seconds", "allow_degrade"})

DEFAULT_PROMPTS: tuple[str, ...] = (
    "a red circle moving right",
    "a blue square sliding down",
    "a green triangle spinning slowly",
    "a yellow ball bouncing on the floor",
    "a white star drifting across a black sky",
    "an orange dot growing larger",
    "a purple line sweeping from left to right",
    "two grey squares swapping places",
)


class LoadConfig(BaseModel):
    """One load run. Rates are requests per second; times are seconds from the start of the run."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="server base URL, e.g. http://127.0.0.1:8000")
    api_key: str | None = Field(default=None, description="sent as 'Authorization: Bearer <key>'")
    rate: float = Field(gt=0, description="mean arrival rate (Poisson arrivals)")
    profile: Literal["poisson", "step", "spike"] = Field(
        default="poisson", description="poisson: constant rate; step: rate, then step_rate; spike: a burst"
    )
    step_rate: float | None = Field(default=None, gt=0, description="step: the rate from step_at_s on")
    step_at_s: float | None = Field(default=None, ge=0, description="step: when the rate changes")
    spike_rate: float | None = Field(default=None, gt=0, description="spike: the rate during the spike")
    spike_at_s: float | None = Field(default=None, ge=0, description="spike: when it starts")
    spike_length_s: float | None = Field(default=None, gt=0, description="spike: how long it lasts")
    duration_s: float = Field(default=60.0, gt=0, description="no arrival at or after this")
    max_requests: int = Field(default=1000, ge=1, le=1_000_000, description="hard cap on requests sent")
    drain_timeout_s: float = Field(
        default=60.0, ge=0, description="after the last arrival, how long to wait for accepted jobs to finish"
    )
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPTS), min_length=1)
    repeat_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of requests resending an earlier body exactly (seed too)",
    )
    tier_mix: dict[str, float] | None = Field(
        default=None, description="tier name -> weight (normalised); None sends no priority"
    )
    deadlines: dict[str, float] | None = Field(
        default=None, description=f"tier name (or '{UNTIERED}') -> deadline_seconds; unlisted tiers send none"
    )
    allow_degrade: bool | float | None = Field(
        default=None, description="a bool sent on every request, or the fraction sent allow_degrade=true"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="merged into every body: num_inference_steps, size, model, seed..."
    )
    seed: int = Field(default=0, description="seeds arrivals, prompts, tiers and request seeds")
    poll_interval_s: float = Field(default=0.2, gt=0, description="shortest wait between polls of one job")
    max_poll_interval_s: float = Field(
        default=1.0, gt=0, description="longest wait between polls of one job (it grows with the job's age)"
    )
    max_concurrent_polls: int = Field(default=16, ge=1, description="status polls in flight at once")
    metrics_interval_s: float = Field(default=0.5, gt=0, description="how often /metrics is sampled")
    request_timeout_s: float = Field(default=30.0, gt=0, description="per HTTP request")
    max_connections: int = Field(default=256, ge=1, description="HTTP connection pool size")
    cancel_unfinished: bool = Field(
        default=False, description="cancel jobs still unfinished when the drain timeout ends"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str]) -> list[str]:
        if any(not prompt.strip() for prompt in value):
            raise ValueError("prompts must not be blank")
        return value

    @field_validator("tier_mix")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("tier_mix needs at least one tier, weights >= 0 and a positive total")
        return value

    @field_validator("deadlines")
    @classmethod
    def _positive_deadlines(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and any(d <= 0 for d in value.values()):
            raise ValueError("deadlines must be > 0 seconds")
        return value

    @field_validator("allow_degrade")
    @classmethod
    def _fraction(cls, value: bool | float | None) -> bool | float | None:
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError("allow_degrade as a fraction must be between 0 and 1")
        return value

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RESERVED_PARAMS & value.keys())
        if clash:
            raise ValueError(f"params may not set {clash}: use prompts, tier_mix, deadlines, allow_degrade")
        return value

    @field_validator("max_poll_interval_s")
    @classmethod
    def _not_below_poll_interval(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("poll_interval_s", 0):
            raise ValueError("max_poll_interval_s must be >= poll_interval_s")
        return value

    # The only check across fields: the CLI names --profile for any error without a field.
    @model_validator(mode="after")
    def _profile_complete(self) -> LoadConfig:
        needed = {"step": ("step_rate", "step_at_s"), "spike": ("spike_rate", "spike_at_s", "spike_length_s")}
        missing = [name for name in needed.get(self.profile, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"profile {self.profile!r} needs {', '.join(missing)}")
        return self

    def rate_at(self, t: float) -> float:
        """The arrival rate at ``t`` seconds into the run."""
        if self.profile == "step" and self.step_rate is not None and t >= (self.step_at_s or 0.0):
            return self.step_rate
        if self.profile == "spike" and self.spike_rate is not None:
            start, length = self.spike_at_s or 0.0, self.spike_length_s or 0.0
            if start <= t < start + length:
                return self.spike_rate
        return self.rate

    def peak_rate(self) -> float:
        return max(self.rate, self.step_rate or 0.0, self.spike_rate or 0.0)


@dataclass(frozen=True)
class PlannedRequest:
    """One arrival: when (seconds from the start) and the exact body to POST."""

    index: int
    at_s: float
    tier: str  # the requested priority, or UNTIERED
    body: dict[str, Any]
    repeat_of: int | None  # index of the request whose body this one resends


def arrival_times(config: LoadConfig) -> list[float]:
    """Offsets of a Poisson process of rate ``config.rate_at(t)``, within ``duration_s`` and ``max_requests``.

    Thinning: candidates at the peak rate, each kept with probability rate(t)/peak, which is exact for
    any rate profile below the peak."""
    rng = random.Random(f"{config.seed}:arrivals")
    peak = config.peak_rate()
    times: list[float] = []
    t = 0.0
    # Bounded: each candidate advances t by an exponential gap; the count cap ends very long runs.
    for _ in range(config.max_requests * 1000):
        t += rng.expovariate(peak)
        if t >= config.duration_s or len(times) >= config.max_requests:
            break
        if rng.random() * peak < config.rate_at(t):
            times.append(t)
    return times


def plan_requests(config: LoadConfig) -> list[PlannedRequest]:
    """The whole run's arrivals and bodies; deterministic for a given config."""
    # Separate streams, so that changing e.g. the repeat rate leaves the arrival times alone.
    rng = random.Random(f"{config.seed}:bodies")
    tiers = list(config.tier_mix or {})
    bounds = list(itertools.accumulate((config.tier_mix or {}).values()))
    planned: list[PlannedRequest] = []
    fresh: list[int] = []
    for index, at_s in enumerate(arrival_times(config)):
        # Every draw happens whatever the config, so request i's body depends only on the seed and i.
        repeat_draw, source_draw, tier_draw = rng.random(), rng.random(), rng.random()
        tier = tiers[bisect.bisect(bounds, tier_draw * bounds[-1])] if tiers else UNTIERED
        prompt = rng.choice(config.prompts)
        seed = rng.randrange(_MAX_SEED)
        degrade_draw = rng.random()
        if fresh and repeat_draw < config.repeat_rate:
            source = planned[fresh[int(source_draw * len(fresh))]]
            planned.append(PlannedRequest(index, at_s, source.tier, dict(source.body), source.index))
            continue
        body: dict[str, Any] = {"prompt": prompt, "seed": seed, **config.params}
        if tiers:
            body["priority"] = tier
        deadline = (config.deadlines or {}).get(tier)
        if deadline is not None:
            body["deadline_seconds"] = deadline
        if isinstance(config.allow_degrade, bool):
            body["allow_degrade"] = config.allow_degrade
        elif config.allow_degrade is not None:
            body["allow_degrade"] = degrade_draw < config.allow_degrade
        fresh.append(index)
        planned.append(PlannedRequest(index, at_s, tier, body, None))
    return planned
