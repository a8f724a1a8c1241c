"""How long one pipeline call takes, learned online from the calls the server runs.

A call costs ``steps × step_s + overhead_s``. Both parts are modelled per model name, as linear
functions of a few shape features (B rows, V = width × height × frames pixel-frames, k = 2 with
classifier-free guidance, else 1):

- per step: ``fixed + per_unit × B·k·V + per_unit2 × B·k·V²``. The fixed part is launch and scheduler
  cost that batching amortises; the linear part is the transformer's MLPs and projections; the
  quadratic part is self-attention, which dominates at large shapes on real video models and is
  negligible on small ones. CFG runs the transformer twice, so it doubles the work, not the fixed part.
- overhead: ``fixed + per_row × B + per_unit × B·V``: setup, text encoding per row, VAE decode.

Why the fit looks the way it does:

- Errors are weighed relative to the measured time, so calls of very different sizes share one fit:
  the fit is on multipliers of the prior's terms, with features ``prior_j(x) / measured``, target 1.
- Least squares with exponential forgetting (about 1/(1-``forgetting``) calls of memory) follows
  drift: a slower clock, a noisy neighbour, a new driver.
- Ridge toward the prior's *shape*, scaled by the data's level (the single multiplier that fits all
  data best): one shape seen many times scales the whole prior instead of pinning an arbitrary split
  between fixed and per-unit parts, so extrapolation stays as sane as the prior.
- Every coefficient stays at least ``_MIN_SHARE`` of its scaled prior: predictions are positive and
  grow with every feature.

Two fast corrections sit on the fit. A model-wide level (EWMA of the median of what fit and memory
together missed over the last few calls) follows a lasting drift within a few calls while the fit
catches up, and ignores a single stall. Once a model has a few calls, one call counts as at most 2x
off its prediction, so a stall or a warm-up call cannot wreck the fit. An exact-shape memory (per
width, height, frames, CFG, batch size; not steps, which per-step cost does not depend on) keeps an
EWMA of ``measured / (fit × level)``: a ratio, not seconds, so a shape seen long ago still follows
later drift. Predictions are clamped between the corrected values of remembered shapes that are
componentwise smaller and larger (``max(L, min(fit, U))``), which keeps them monotone non-decreasing
in batch size, width, height, frames, CFG and steps even where the memory corrects the fit downward.

Not thread-safe: the server calls ``observe`` and ``predict`` from its event loop only.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from reelserve.engine.finish_cost import FinishCost
from reelserve.engine.relative_ridge import Features, RelativeRidge
from reelserve.schemas import GenerationParams

FILE_FORMAT = "reelserve.cost_model"
FILE_VERSION = 1
_RATIO_BOUNDS = (0.2, 5.0)  # one call moves a correction toward at most this far from 1
_OUTLIER_BOUNDS = (0.5, 2.0)  # how far one call may sit from the prediction once the fit is trusted
_LEVEL_MEDIAN_OF = 5  # calls whose median moves the level
_TRUSTED_WEIGHT = 3.0  # observations' worth of (forgotten) evidence before outliers are clipped
_SHAPES_PER_MODEL = 256
_PREDICTION_CACHE = 4096
_SETTINGS = ("forgetting", "memory_alpha", "level_alpha", "prior_weight")  # saved with the fit

Shape = tuple[int, int, int, bool, int]  # width, height, frames, cfg, batch size


@dataclass(frozen=True)
class CallTiming:
    """What the runner measured for one pipeline call."""

    batch_size: int
    steps: int
    step_s: float | None  # mean seconds per denoising step; None when it could not be measured
    overhead_s: float  # the rest of the call (text encoding, VAE decode, ...)
    total_s: float


@dataclass(frozen=True)
class CostPrior:
    """Coefficients used before any call of a model is observed (seconds). The defaults roughly match
    the tiny model on CPU: 64×64, 17 frames, CFG, one row ≈ 0.04 s per step and ≈ 0.2 s overhead."""

    step_fixed_s: float = 0.01
    step_per_unit_s: float = 2.15e-7  # per row × pixel-frame, doubled by CFG
    step_per_unit2_s: float = 3.0e-15  # per row × pixel-frame², doubled by CFG (attention)
    overhead_fixed_s: float = 0.1
    overhead_per_row_s: float = 0.02
    overhead_per_unit_s: float = 1.15e-6  # per row × pixel-frame (VAE decode)

    def step_terms(self) -> Features:
        return (self.step_fixed_s, self.step_per_unit_s, self.step_per_unit2_s)

    def overhead_terms(self) -> Features:
        return (self.overhead_fixed_s, self.overhead_per_row_s, self.overhead_per_unit_s)


def _step_features(shape: Shape) -> Features:
    width, height, frames, cfg, batch = shape
    volume = float(width * height * frames)
    work = batch * (2 if cfg else 1) * volume
    return (1.0, work, work * volume)


def _overhead_features(shape: Shape) -> Features:
    width, height, frames, _cfg, batch = shape
    return (1.0, float(batch), float(batch * width * height * frames))


class _CostPart:
    """One part of a call's cost (per step, or overhead) of one model: fit, level and shape memory."""

    def __init__(self, prior: Features, prior_weight: float, features: Callable[[Shape], Features]):
        self.fit = RelativeRidge(prior, prior_weight)
        self.features = features
        self.level = 1.0
        self.recent_levels: deque[float] = deque(maxlen=_LEVEL_MEDIAN_OF)  # not saved: refills in a few calls
        self.shapes: OrderedDict[Shape, tuple[float, int]] = OrderedDict()  # shape -> (ratio, calls)

    def observe(self, shape: Shape, seconds: float, model: CostModel) -> None:
        if self.fit.weight >= _TRUSTED_WEIGHT:  # one stall or near-empty call counts as 2x off at most
            expected = self.predict(shape)
            seconds = min(max(seconds, expected * _OUTLIER_BOUNDS[0]), expected * _OUTLIER_BOUNDS[1])
        self.fit.observe(self.features(shape), seconds, model.forgetting)
        fitted = self.fit.predict(self.features(shape))
        # A new shape starts at the fit's own opinion, so its first call (often a warm-up) counts once.
        old_ratio, calls = self.shapes.pop(shape, (1.0, 0))
        # The level follows what fit and memory together still miss: drift, not one shape's quirks; the
        # median of the last few calls makes it follow a change that lasts and ignore a single stall.
        self.recent_levels.append(seconds / (fitted * old_ratio))
        self.level = _blend(self.level, statistics.median(self.recent_levels), model.level_alpha)
        ratio = _blend(old_ratio, seconds / (fitted * self.level), model.memory_alpha)
        self.shapes[shape] = (ratio, calls + 1)
        while len(self.shapes) > _SHAPES_PER_MODEL:
            self.shapes.popitem(last=False)

    def predict(self, shape: Shape) -> float:
        """The fit at ``shape``, held between the corrected values of remembered shapes componentwise
        below and above it: ``max(L, min(fit, U))`` is monotone because fit, L and U all are."""
        below, above = 0.0, math.inf
        for seen, (ratio, _calls) in self.shapes.items():
            smaller, larger = _at_most(seen, shape), _at_most(shape, seen)
            if smaller or larger:
                corrected = self.fit.predict(self.features(seen)) * ratio
                if smaller:
                    below = max(below, corrected)
                if larger:
                    above = min(above, corrected)
        return self.level * max(below, min(self.fit.predict(self.features(shape)), above))

    def state(self) -> dict[str, Any]:
        shapes = [[*shape, ratio, calls] for shape, (ratio, calls) in self.shapes.items()]
        return {**self.fit.state(), "level": self.level, "shapes": shapes}

    def restore(self, state: _PartState) -> None:
        self.fit.restore(state)
        self.level = state.level
        for width, height, frames, cfg, batch, ratio, calls in state.shapes:
            self.shapes[(int(width), int(height), int(frames), bool(cfg), int(batch))] = (ratio, int(calls))


class _ModelCosts:
    """Everything learned about one model name."""

    def __init__(self, prior: CostPrior, prior_weight: float) -> None:
        self.step = _CostPart(prior.step_terms(), prior_weight, _step_features)
        self.overhead = _CostPart(prior.overhead_terms(), prior_weight, _overhead_features)
        self.observations = 0

    def state(self) -> dict[str, Any]:
        return {"observations": self.observations, "step": self.step.state(),
                "overhead": self.overhead.state()}


class CostModel:
    """Predicts seconds per pipeline call; learns from ``observe``. See the module docstring."""

    def __init__(
        self,
        prior: CostPrior | None = None,
        *,
        forgetting: float = 0.95,
        memory_alpha: float = 0.3,
        level_alpha: float = 0.3,
        prior_weight: float = 0.5,
    ) -> None:
        """:param prior: coefficients before data; ``CostPrior()`` when None.
        :param forgetting: weight an observation keeps per later observation of the same model (0..1].
        :param memory_alpha: EWMA weight of the newest call in the exact-shape memory (0..1].
        :param level_alpha: EWMA weight of the newest call in the model-wide level (0..1].
        :param prior_weight: how many calls' worth of evidence the prior's shape counts for."""
        if not all(0.0 < x <= 1.0 for x in (forgetting, memory_alpha, level_alpha)) or prior_weight <= 0.0:
            raise ValueError("forgetting, memory_alpha, level_alpha must be in (0, 1]; prior_weight above 0")
        self.prior = prior or CostPrior()
        self.forgetting = forgetting
        self.memory_alpha = memory_alpha
        self.level_alpha = level_alpha
        self.prior_weight = prior_weight
        self._models: dict[str, _ModelCosts] = {}
        self._unobserved = _ModelCosts(self.prior, prior_weight)  # what a model not seen yet costs
        self._cache: dict[tuple[str, Shape], tuple[float, float]] = {}
        self.finish = FinishCost()  # per job, after its call: encoding and storing the outputs

    # -- predictions -------------------------------------------------------------------------

    def predict(self, params: GenerationParams, batch_size: int) -> float:
        """Seconds for a whole call of ``batch_size`` rows shaped like ``params``; always > 0."""
        step_s, overhead_s = self._predict_parts(params.model, _shape(params, batch_size))
        return params.steps_run * step_s + overhead_s

    def predict_step(self, params: GenerationParams, batch_size: int) -> float:
        """Seconds per denoising step of such a call; always > 0."""
        return self._predict_parts(params.model, _shape(params, batch_size))[0]

    def predict_overhead(self, params: GenerationParams, batch_size: int) -> float:
        """Seconds of such a call outside the denoising loop; always > 0."""
        return self._predict_parts(params.model, _shape(params, batch_size))[1]

    def _predict_parts(self, model: str, shape: Shape) -> tuple[float, float]:
        cached = self._cache.get((model, shape))
        if cached is not None:
            return cached
        costs = self._models.get(model, self._unobserved)
        parts = (costs.step.predict(shape), costs.overhead.predict(shape))
        if len(self._cache) >= _PREDICTION_CACHE:
            self._cache.clear()
        self._cache[(model, shape)] = parts
        return parts

    # -- learning ----------------------------------------------------------------------------

    def observe(self, params: GenerationParams, timing: CallTiming) -> None:
        """Learn from one finished call. Calls with no steps or no positive time teach nothing."""
        if timing.batch_size < 1 or timing.steps < 1 or not timing.total_s > 0.0:
            return
        shape = _shape(params, timing.batch_size)
        step_s, overhead_s = timing.step_s, timing.overhead_s
        if step_s is None or not step_s > 0.0:
            # Split the total as the current model would, so the level is still learned.
            predicted_step, predicted_overhead = self._predict_parts(params.model, shape)
            scale = timing.total_s / (timing.steps * predicted_step + predicted_overhead)
            step_s, overhead_s = predicted_step * scale, predicted_overhead * scale
        costs = self._costs(params.model)
        costs.step.observe(shape, step_s, self)
        if overhead_s > 0.0:  # a zero overhead (all of it inside the loop) has no relative error
            costs.overhead.observe(shape, overhead_s, self)
        costs.observations += 1
        self._cache.clear()

    def observations(self, model: str | None = None) -> int:
        """Calls observed, of every model or of ``model``."""
        if model is not None:
            return self._models[model].observations if model in self._models else 0
        return sum(costs.observations for costs in self._models.values())

    def _costs(self, model: str) -> _ModelCosts:
        costs = self._models.get(model)
        if costs is None:
            costs = self._models[model] = _ModelCosts(self.prior, self.prior_weight)
        return costs

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "prior": asdict(self.prior),
            "settings": {name: getattr(self, name) for name in _SETTINGS},
            "models": {name: costs.state() for name, costs in self._models.items()},
            "finish": self.finish.state(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CostModel:
        """Inverse of ``to_dict``; raises ValueError naming what is wrong."""
        try:
            state = _FileState.model_validate(data)
            if state.format != FILE_FORMAT or state.version != FILE_VERSION:
                raise ValueError(f"expected format {FILE_FORMAT!r} version {FILE_VERSION}")
            model = cls(CostPrior(**state.prior), **{name: state.settings[name] for name in _SETTINGS})
            for name, saved in state.models.items():
                costs = model._costs(name)
                costs.observations = saved.observations
                costs.step.restore(saved.step)
                costs.overhead.restore(saved.overhead)
            model.finish.restore(state.finish)
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a valid cost model: {exc}") from None
        return model

    def save(self, path: Path) -> None:
        """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(self.to_dict()))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> CostModel:
        """Read a file written by ``save``. FileNotFoundError if missing; ValueError if unreadable."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no cost model file at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a cost model file (bad JSON: {exc})") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _shape(params: GenerationParams, batch_size: int) -> Shape:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    return (params.width, params.height, params.num_frames, params.guidance_scale > 1.0, batch_size)


def _blend(old: float, ratio: float, alpha: float) -> float:
    return (1.0 - alpha) * old + alpha * min(max(ratio, _RATIO_BOUNDS[0]), _RATIO_BOUNDS[1])


def _at_most(a: Shape, b: Shape) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


class _PartState(BaseModel):
    gram: list[list[float]]
    moment: list[float]
    weight: float = Field(ge=0)
    level: float = Field(gt=0)
    # width, height, frames, cfg (0/1), batch size, ratio, calls
    shapes: list[tuple[int, int, int, int, int, Annotated[float, Field(gt=0)], int]]


class _ModelState(BaseModel):
    observations: int = Field(ge=0)
    step: _PartState
    overhead: _PartState


class _FileState(BaseModel):
    format: str
    version: int
    prior: dict[str, float]
    settings: dict[str, float]
    models: dict[str, _ModelState]
    finish: dict[str, Any] = Field(default_factory=dict)  # absent in files written before it existed
