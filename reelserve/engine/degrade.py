"""Load-based degradation: which row of the table the current load is at, and what a request
becomes under it. Only requests that allow it are ever changed, and every change is reported."""

from __future__ import annotations

from collections.abc import Sequence

from reelserve.schemas import Degradation, GenerationParams, ModelLimits
from reelserve.schemas.slo import DegradeLevel


def load_level(levels: Sequence[DegradeLevel], queue_delay_s: float) -> DegradeLevel | None:
    """The most severe level whose threshold the estimated queue delay has reached; None is normal."""
    reached = [level for level in levels if queue_delay_s >= level.min_queue_delay_s]
    return max(reached, key=lambda level: level.min_queue_delay_s) if reached else None


def stronger_levels(levels: Sequence[DegradeLevel], than: DegradeLevel | None) -> list[DegradeLevel]:
    """Levels above ``than`` (all of them when it is None), mildest first."""
    floor = -1.0 if than is None else than.min_queue_delay_s
    return sorted((lvl for lvl in levels if lvl.min_queue_delay_s > floor), key=lambda lvl: lvl.min_queue_delay_s)


def degrade(
    params: GenerationParams, level: DegradeLevel, limits: ModelLimits
) -> tuple[GenerationParams, dict[str, Degradation]]:
    """``params`` within ``level``'s limits, and what changed. Frames drop to the longest count the
    model takes (k·temporal_multiple + 1) that is within ``max_frames``; the fps stays, so the clip
    gets shorter rather than choppier."""
    changes: dict[str, Degradation] = {}
    update: dict[str, int] = {}
    if level.max_steps is not None and params.num_inference_steps > level.max_steps:
        update["num_inference_steps"] = level.max_steps
    if level.max_frames is not None:
        k = limits.temporal_multiple
        frames = (level.max_frames - 1) // k * k + 1
        if params.num_frames > frames >= 1:
            update["num_frames"] = frames
    for name, ran in update.items():
        changes[name] = Degradation(requested=getattr(params, name), ran=ran)
    return (params.model_copy(update=update) if update else params), changes
