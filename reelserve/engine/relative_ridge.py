"""The regression under the cost model: forgetting least squares on multipliers of a prior's terms.

Errors are weighed relative to the measured time (features ``prior_j(x) / measured``, target 1), so
observations of very different sizes share one fit. The ridge pulls toward the prior's *shape*
scaled by the data's level (the one multiplier that fits all data best), so one shape seen many
times scales the whole prior rather than pinning an arbitrary split between its terms. Every
coefficient stays at least ``MIN_SHARE`` of its scaled prior, so predictions are positive and grow
with every feature.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

MIN_SHARE = 0.02  # a coefficient never falls below this fraction of its (scaled) prior

Features = tuple[float, ...]


class FitState(Protocol):
    """A saved fit (``RelativeRidge.state``), as read back from a file."""

    gram: list[list[float]]
    moment: list[float]
    weight: float


class RelativeRidge:
    """Forgetting least squares on multipliers of the prior's terms."""

    def __init__(self, prior: Features, prior_weight: float) -> None:
        self.prior = prior
        self.prior_weight = prior_weight
        n = len(prior)
        self.gram = np.zeros((n, n))
        self.moment = np.zeros(n)
        self.weight = 0.0
        self._coefficients: Features | None = None

    def observe(self, features: Features, seconds: float, forgetting: float) -> None:
        z = np.array([p * x for p, x in zip(self.prior, features, strict=True)]) / seconds
        self.gram = forgetting * self.gram + np.outer(z, z)
        self.moment = forgetting * self.moment + z
        self.weight = forgetting * self.weight + 1.0
        self._coefficients = None

    def coefficients(self) -> Features:
        if self._coefficients is None:
            self._coefficients = self._solve()
        return self._coefficients

    def predict(self, features: Features) -> float:
        return sum(c * x for c, x in zip(self.coefficients(), features, strict=True))

    def _solve(self) -> Features:
        if self.weight == 0.0:
            return self.prior
        scale = float(self.moment.sum() / self.gram.sum())  # the one multiplier that fits best alone
        n = len(self.prior)
        lhs = scale * scale * self.gram + self.prior_weight * np.eye(n)
        rhs = scale * self.moment + self.prior_weight * np.ones(n)
        # Active set, floors only: multipliers below the floor are pinned there and the rest re-solved.
        pinned = np.zeros(n, dtype=bool)
        multipliers = np.full(n, MIN_SHARE)
        while not pinned.all():
            free = ~pinned
            reduced_rhs = rhs[free] - lhs[np.ix_(free, pinned)] @ multipliers[pinned]
            multipliers[free] = np.linalg.solve(lhs[np.ix_(free, free)], reduced_rhs)
            low = free & (multipliers < MIN_SHARE)
            if not low.any():
                break
            pinned |= low
            multipliers[low] = MIN_SHARE
        return tuple(p * scale * float(m) for p, m in zip(self.prior, multipliers, strict=True))

    def state(self) -> dict[str, Any]:
        return {"gram": self.gram.tolist(), "moment": self.moment.tolist(), "weight": self.weight}

    def restore(self, state: FitState) -> None:
        n = len(self.prior)
        if len(state.moment) != n or len(state.gram) != n or any(len(row) != n for row in state.gram):
            raise ValueError(f"fit state must have {n} terms")
        self.gram = np.array(state.gram, dtype=float)
        self.moment = np.array(state.moment, dtype=float)
        self.weight = state.weight
        self._coefficients = None
