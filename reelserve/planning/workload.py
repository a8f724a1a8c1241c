"""What the planner simulates: the traffic (rate, profile, shapes, repeats, tiers) and the server
that takes it (workers, batching, tiers). A JSON file holds one ``Workload``; CLI flags build or
override one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reelserve.schemas import GenerationParams
from reelserve.schemas.slo import DEFAULT_TIERS, Tier

_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)$")


class RequestShape(BaseModel):
    """One kind of request in the mix. Requests of equal shapes (and model) can share a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(64, gt=0)
    height: int = Field(64, gt=0)
    frames: int = Field(17, gt=0)
    steps: int = Field(25, gt=0)
    guidance: float = Field(5.0, ge=0, description="above 1: classifier-free guidance, twice the work")
    model: str | None = Field(None, description="None: the workload's model")
    weight: float = Field(1.0, gt=0, description="relative share of requests")

    def label(self) -> str:
        """The ``--mix`` spelling: WxHxFRAMESxSTEPS."""
        return f"{self.width}x{self.height}x{self.frames}x{self.steps}"


class ServerConfig(BaseModel):
    """The simulated server. Each worker is one pipeline process on one GPU."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1, le=4096)
    max_batch_size: int = Field(4, ge=1, le=64, description="most requests in one pipeline call")
    max_wait_s: float = Field(0.05, ge=0, description="how long an open batch waits for joiners")
    # On, as the server's settings (``reelserve plan``'s flags and a workload file may turn them off).
    continuous_batching: bool = Field(
        True, description="as the server's setting: waiting jobs of a running batch's shape join it at a step"
    )
    preemption: bool = Field(
        True, description="as the server's setting: a running batch makes way, at a step, for more urgent work"
    )
    tiers: list[Tier] = Field(default_factory=lambda: list(DEFAULT_TIERS))

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)


class Workload(BaseModel):
    """Traffic plus server. Arrivals are Poisson at ``rate_per_min``; as in the load generator, ``step``
    changes the rate to ``step_rate_per_min`` from ``step_at_s`` on, and ``spike`` to
    ``spike_rate_per_min`` for ``spike_length_s`` from ``spike_at_s``."""

    model_config = ConfigDict(extra="forbid")

    rate_per_min: float = Field(60.0, gt=0, description="mean arrivals per minute (before the profile)")
    profile: Literal["poisson", "step", "spike"] = "poisson"
    step_rate_per_min: float | None = Field(None, gt=0, description="step: the rate from step_at_s on")
    step_at_s: float | None = Field(None, ge=0, description="step: when the rate changes")
    spike_rate_per_min: float | None = Field(None, gt=0, description="spike: the rate during the spike")
    spike_at_s: float | None = Field(None, ge=0, description="spike: when it starts")
    spike_length_s: float | None = Field(None, gt=0, description="spike: how long it lasts")
    model: str = Field("micro", description="model of shapes that name none")
    mix: list[RequestShape] = Field(default_factory=lambda: [RequestShape()], min_length=1)
    repeat_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of requests identical to an earlier one (a cache hit once it is done)",
    )
    tier_mix: dict[str, float] = Field(default_factory=lambda: {"standard": 1.0}, min_length=1)
    deadlines: dict[str, float] = Field(
        default_factory=dict,
        description="tier name -> deadline_seconds the requests send; else the tier's default",
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    requests: int = Field(2000, ge=1, le=2_000_000, description="simulated arrivals")
    max_duration_s: float | None = Field(None, gt=0, description="no arrivals after this simulated time")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        known = {tier.name for tier in self.server.tiers}
        unknown = sorted((set(self.tier_mix) | set(self.deadlines)) - known)
        if unknown:
            raise ValueError(
                f"tier_mix or deadlines name unknown tiers {unknown}; the server has {sorted(known)}"
            )
        if any(weight < 0 for weight in self.tier_mix.values()) or sum(self.tier_mix.values()) <= 0:
            raise ValueError("tier_mix weights must be non-negative with a positive sum")
        needed = {
            "step": ("step_rate_per_min", "step_at_s"),
            "spike": ("spike_rate_per_min", "spike_at_s", "spike_length_s"),
        }
        missing = [name for name in needed.get(self.profile, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"profile {self.profile!r} needs {', '.join(missing)}")
        return self

    def rate_at(self, t: float) -> float:
        """Arrivals per second at simulated time ``t``."""
        if self.profile == "step" and t >= self.step_at_s:  # type: ignore[operator]
            return self.step_rate_per_min / 60.0  # type: ignore[operator]
        if self.profile == "spike" and self.spike_at_s <= t < self.spike_at_s + self.spike_length_s:  # type: ignore[operator]
            return self.spike_rate_per_min / 60.0  # type: ignore[operator]
        return self.rate_per_min / 60.0

    def rate_changes(self) -> list[float]:
        """Times at which ``rate_at`` may change."""
        if self.profile == "step":
            return [self.step_at_s]  # type: ignore[list-item]
        if self.profile == "spike":
            return [self.spike_at_s, self.spike_at_s + self.spike_length_s]  # type: ignore[list-item, operator]
        return []

    def deadline_s(self, tier: str) -> float:
        return self.deadlines.get(tier, self.server.tier(tier).default_deadline_s)

    def params(self, shape: RequestShape, prompt: str = "planned request", seed: int = 0) -> GenerationParams:
        return GenerationParams(
            model=shape.model or self.model,
            prompt=prompt,
            width=shape.width,
            height=shape.height,
            num_frames=shape.frames,
            fps=8,
            num_inference_steps=shape.steps,
            guidance_scale=shape.guidance,
            seed=seed,
        )

    @classmethod
    def checked(cls, data: object, source: str = "workload") -> Workload:
        """Validate ``data`` (a dict, or JSON text); ValueError lists each problem as ``field: message``."""
        try:
            return cls.model_validate_json(data) if isinstance(data, str) else cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'workload'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(f"{source}: {problems}") from None

    @classmethod
    def from_file(cls, path: Path) -> Workload:
        """Read a JSON workload; raises ValueError naming the problem."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the workload: {exc}") from None
        return cls.checked(text, str(path))


def parse_mix(text: str, guidance: float = 5.0, model: str | None = None) -> list[RequestShape]:
    """``"64x64x17x25:0.7,128x128x33x25:0.3"`` (WxHxFRAMESxSTEPS:weight; the weight may be left out)."""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        dims, _, weight = item.partition(":")
        match = _SHAPE_RE.match(dims.strip())
        if not match:
            raise ValueError(
                f"mix item {item!r} must look like WxHxFRAMESxSTEPS[:weight], e.g. 64x64x17x25:0.7"
            )
        width, height, frames, steps = (int(g) for g in match.groups())
        try:
            shapes.append(
                RequestShape(
                    width=width,
                    height=height,
                    frames=frames,
                    steps=steps,
                    guidance=guidance,
                    model=model,
                    weight=float(weight) if weight else 1.0,
                )
            )
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"mix item {item!r}: {exc}") from None
    if not shapes:
        raise ValueError("the mix is empty")
    return shapes


def parse_tier_mix(text: str) -> dict[str, float]:
    """``"realtime:0.2,standard:0.8"``; a name without a weight counts 1."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"tier mix item {item!r} must look like NAME:weight") from None
    if not weights:
        raise ValueError("the tier mix is empty")
    return weights
