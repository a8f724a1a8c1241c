"""The denoising loop, owned by the engine: it steps rows through a ``ModelFamily`` itself, so each
row is independent. After every evaluation each row may be stopped (cancelled, or taken over by
another worker) and leaves, finished rows are decoded as they finish, and at the step boundary
(``Boundary``) rows may join (continuous batching) or be parked: taken out with their whole state
(a ``Row``: latents, scheduler, step, conditioning), to join again later and end as if never parked
(preemption that loses no work; ``engine/parked_rows.py`` keeps one as bytes).

Which rows are evaluated together: those the family can evaluate in one call (``group_key``: the
same expert and guidance on or off, for Wan) and, with ``mixed_steps`` off, at the same step. Rows
at different steps share a call when ``mixed_steps`` is on: each carries its own timestep. A step
cache keeps per-step state for the rows it was primed with, so its runs keep ``mixed_steps`` off.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from reelserve.models.family import ModelFamily, Row

# (row keys evaluated, the step they completed (1-based), the rows' total steps); called once per
# set of evaluated rows at the same step and total.
OnStep = Callable[[list[str], int, int], None]
# (row key, its frames) as each row is decoded; given it, ``denoise`` keeps no frames itself (a batch
# that rows keep joining may never end).
OnFinished = Callable[[str, np.ndarray], None]
# The rows about to be evaluated together, whenever they differ from the last step's: what was
# primed for a batch (the CFG wrapper's negatives, a step cache's residuals) is for those rows.
OnGroup = Callable[[list[Row]], None]
# The rows just evaluated, stepped: their state after this step (live previews read their x0 estimate).
AfterStep = Callable[[list[Row]], None]


@dataclass
class Boundary:
    """What may change a running batch between two evaluations; each hook gets the rows still running."""

    admit: Callable[[list[Row]], list[Row]] | None = None
    """Rows that join now: new (``prepare_rows``), or parked ones resuming at their own step."""
    park: Callable[[list[Row]], list[str]] | None = None
    """Keys of running rows to take out now, whole, into ``parked``."""
    parked: dict[str, Row] = field(default_factory=dict)
    """Filled as rows are parked (the caller takes them out to resume or keep them)."""
    checkpoint: Callable[[list[Row]], None] | None = None
    """Sees the rows that run on, whole, before any joins (to save a copy of their state)."""
    swap_out: Callable[[list[Row]], list[str]] | None = None
    """Keys of running rows to take out now, whole, while the batch goes on (each for a more urgent
    row that joins in its slot); each is handed to ``on_swapped_out`` at once."""
    on_swapped_out: Callable[[Row], None] | None = None

    def cross(self, live: list[Row]) -> list[Row]:
        """The rows that run on past this boundary."""
        if self.park is not None and live:
            leaving = set(self.park(live))
            self.parked.update((row.key, row) for row in live if row.key in leaving)
            live = [row for row in live if row.key not in leaving]
        if self.swap_out is not None and self.on_swapped_out is not None and live:
            leaving = set(self.swap_out(live))
            for row in live:
                if row.key in leaving:
                    self.on_swapped_out(row)
            live = [row for row in live if row.key not in leaving]
        if self.checkpoint is not None and live:
            self.checkpoint(live)
        if self.admit is not None:
            live = live + self.admit(live)
        return live


def denoise(
    family: ModelFamily, rows: list[Row], should_stop: Callable[[str], bool] | None = None,
    on_step: OnStep | None = None, on_group: OnGroup | None = None, stopped: dict[str, int] | None = None,
    boundary: Boundary | None = None, mixed_steps: bool = False, on_finished: OnFinished | None = None,
    after_step: AfterStep | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Run ``rows`` (and those that join at a ``boundary``) to the end or until parked. Returns the
    frames of each finished row (empty with ``on_finished``), and the step after which each stopped
    row left. ``stopped`` (returned) is filled as rows leave, so a caller holding it knows them even
    when a later step raises."""
    frames: dict[str, np.ndarray] = {}
    stopped = {} if stopped is None else stopped
    live, last_group, last_run, evaluations = list(rows), None, {}, 0
    while live:
        group = next_group(family, live, mixed_steps, last_run)
        evaluations += 1
        last_run.update((row.key, evaluations) for row in group)
        keys = [row.key for row in group]
        if on_group is not None and keys != last_group:
            on_group(group)
            last_group = keys
        family.scheduler_step(group, family.denoise_step(group))
        if after_step is not None:
            after_step(group)
        if on_step is not None:
            for (step, total), advanced in _by_progress(group).items():
                on_step(advanced, step, total)
        if should_stop is not None:
            stopped.update((row.key, row.step) for row in live if row.key not in stopped and should_stop(row.key))
        finished = [row for row in group if row.done and row.key not in stopped]
        for row, clip in zip(finished, family.decode(finished) if finished else (), strict=True):
            if on_finished is None:
                frames[row.key] = clip
            else:
                on_finished(row.key, clip)
        live = [row for row in live if not row.done and row.key not in stopped]
        if boundary is not None:
            live = boundary.cross(live)
    return frames, stopped


def next_group(family: ModelFamily, live: list[Row], mixed_steps: bool, last_run: dict[str, int]) -> list[Row]:
    """The rows evaluated next: those that can share a call with the row that waited longest
    (``last_run``: the evaluation each row was last in), so no group starves while rows keep joining;
    then the least advanced. Without ``mixed_steps`` rows share a call only at the same step of the
    same schedule (a step cache keeps per-step state)."""
    lead = min(live, key=lambda row: (last_run.get(row.key, -1), row.step))

    def key(row: Row) -> Hashable:
        return family.group_key(row), (None if mixed_steps else (row.step, len(row.timesteps)))

    wanted = key(lead)
    return [row for row in live if key(row) == wanted]


def _by_progress(group: list[Row]) -> dict[tuple[int, int], list[str]]:
    progress: dict[tuple[int, int], list[str]] = {}
    for row in group:
        progress.setdefault((row.step, len(row.timesteps)), []).append(row.key)
    return progress
