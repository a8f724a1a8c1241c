"""Each step cache's knob, per model: what the server, the cache key and the planner read without
importing torch or diffusers (the API process needs them for cache keys, and never runs a model)."""

from __future__ import annotations

from reelserve.accel.options import StepCacheKind

# Calibrated on the micro model at its 25 default steps with `reelserve bench quality --sweep
# --seeds 0,1` (docs/accelerations.md): the largest knob swept whose held-out mean adherence stayed
# within 2 points of the uncached run; MagCache, the presets' cache, also on the CI gate's 12-step
# workload (at 12 steps 0.2 already flips shapes that 25 steps keep).
CALIBRATED_THRESHOLDS: dict[str, dict[str, float]] = {
    "micro": {"fbcache": 0.08, "magcache": 0.12, "taylorseer": 2, "pab": 2},
}
# For models without a calibration: the values the cache's authors recommend for video.
DEFAULT_THRESHOLDS: dict[str, float] = {"fbcache": 0.05, "magcache": 0.06, "taylorseer": 3, "pab": 2}


def threshold_for(kind: StepCacheKind, model: str, threshold: float | None) -> float:
    if threshold is not None:
        return threshold
    return CALIBRATED_THRESHOLDS.get(model, {}).get(kind, DEFAULT_THRESHOLDS[kind])
