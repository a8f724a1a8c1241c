"""The denoising loop, owned by the engine: it steps rows through a ``ModelFamily`` itself, so each
row is independent. Rows at the same step are evaluated together; a row leaves the moment it is
stopped (cancelled, or taken over by another worker) or finished, and finished rows are decoded as
they finish."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reelserve.models.family import ModelFamily, Row

# (row keys evaluated, the step they completed (1-based), the rows' total steps)
OnStep = Callable[[list[str], int, int], None]


def denoise(
    family: ModelFamily, rows: list[Row], should_stop: Callable[[str], bool] | None = None,
    on_step: OnStep | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Run ``rows`` to the end. Returns the frames of each finished row, and the step at which
    each stopped row left (rows stopped before their first step leave at 0)."""
    frames: dict[str, np.ndarray] = {}
    stopped: dict[str, int] = {}
    live = list(rows)
    while live:
        live = _drop_stopped(live, should_stop, stopped)
        if not live:
            break
        group = [row for row in live if row.step == min(r.step for r in live)]
        family.scheduler_step(group, family.denoise_step(group))
        if on_step is not None:
            on_step([row.key for row in group], group[0].step, len(group[0].timesteps))
        finished = [row for row in group if row.done and not (should_stop and should_stop(row.key))]
        if finished:
            frames.update(zip([row.key for row in finished], family.decode(finished), strict=True))
        live = [row for row in live if row.key not in frames]  # a finished row stopped at its last step leaves next
    return frames, stopped


def _drop_stopped(live: list[Row], should_stop: Callable[[str], bool] | None, stopped: dict[str, int]) -> list[Row]:
    if should_stop is None:
        return live
    for row in live:
        if should_stop(row.key):
            stopped[row.key] = row.step
    return [row for row in live if row.key not in stopped]
