"""How long writing one finished job's outputs takes: MP4 encoding and the storage put (its
thumbnail is made when first asked for), the part of a job after its pipeline call. It runs on one
encode thread, beside the next batch, so a batch's rows finish one after another.

Per model: a prior ``fixed_s + per_unit_s × width·height·frames`` scaled by an EWMA of measured /
prior. One scale, not a fit: the encoder's cost is close to linear in pixels, and the scale alone
follows the machine (a faster CPU, a slower disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reelserve.schemas import GenerationParams

_RATIO_BOUNDS = (0.2, 5.0)  # how far one job moves the scale, relative to the current one


@dataclass(frozen=True)
class FinishPrior:
    """Before any job of a model finished: roughly the tiny model's 64×64, 9-frame clip on a CPU."""

    fixed_s: float = 0.01
    per_unit_s: float = 3e-7  # per pixel-frame


class FinishCost:
    def __init__(self, prior: FinishPrior | None = None, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.prior = prior or FinishPrior()
        self.alpha = alpha
        self._scale: dict[str, float] = {}  # model -> EWMA of measured / prior

    def predict(self, params: GenerationParams) -> float:
        """Seconds to write one job's outputs; always > 0."""
        return self._scale.get(params.model, 1.0) * self._prior(params)

    def observe(self, params: GenerationParams, seconds: float) -> None:
        if not seconds > 0.0:
            return
        ratio = seconds / self._prior(params)
        scale = self._scale.get(params.model)
        if scale is None:  # the first job of a model replaces the prior's guess outright
            self._scale[params.model] = ratio
            return
        ratio = min(max(ratio, scale * _RATIO_BOUNDS[0]), scale * _RATIO_BOUNDS[1])  # one stall is not a trend
        self._scale[params.model] = (1.0 - self.alpha) * scale + self.alpha * ratio

    def _prior(self, params: GenerationParams) -> float:
        return self.prior.fixed_s + self.prior.per_unit_s * params.width * params.height * params.num_frames

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "scale": dict(self._scale)}

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of ``state``; raises ValueError naming what is wrong."""
        alpha, scale = state.get("alpha", self.alpha), state.get("scale", {})
        if not isinstance(scale, dict) or not all(
            isinstance(v, int | float) and v > 0 for v in scale.values()
        ) or not 0.0 < alpha <= 1.0:
            raise ValueError("finish: expected alpha in (0, 1] and positive scales per model")
        self.alpha = float(alpha)
        self._scale = {str(model): float(v) for model, v in scale.items()}
