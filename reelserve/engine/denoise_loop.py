"""The denoising loop, owned by the engine: it steps rows through a ``ModelFamily`` itself, so each
row is independent. Rows at the same step are evaluated together; after every step each row may be
stopped (cancelled, or taken over by another worker) and leaves, and finished rows are decoded as
they finish."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reelserve.models.family import ModelFamily, Row

# (row keys evaluated, the step they completed (1-based), the rows' total steps)
OnStep = Callable[[list[str], int, int], None]
# The rows about to be evaluated together, whenever they differ from the last step's: what was
# primed for a batch (the CFG wrapper's negatives, a step cache's residuals) is for those rows.
OnGroup = Callable[[list[Row]], None]


def denoise(
    family: ModelFamily, rows: list[Row], should_stop: Callable[[str], bool] | None = None,
    on_step: OnStep | None = None, on_group: OnGroup | None = None, stopped: dict[str, int] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Run ``rows`` to the end. Returns the frames of each finished row, and the step after which
    each stopped row left. ``stopped`` (returned) is filled as rows leave, so a caller holding it
    knows them even when a later step raises."""
    frames: dict[str, np.ndarray] = {}
    stopped = {} if stopped is None else stopped
    live, last_group = list(rows), None
    while live:
        at = min(row.step for row in live)
        group = [row for row in live if row.step == at]
        keys = [row.key for row in group]
        if on_group is not None and keys != last_group:
            on_group(group)
            last_group = keys
        family.scheduler_step(group, family.denoise_step(group))
        if on_step is not None:
            on_step(keys, group[0].step, len(group[0].timesteps))
        if should_stop is not None:
            stopped.update((row.key, row.step) for row in live if row.key not in stopped and should_stop(row.key))
        finished = [row for row in group if row.done and row.key not in stopped]
        if finished:
            frames.update(zip([row.key for row in finished], family.decode(finished), strict=True))
        live = [row for row in live if row.key not in frames and row.key not in stopped]
    return frames, stopped
