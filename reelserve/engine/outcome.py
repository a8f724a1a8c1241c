"""What one run of a batch gives back: kept apart from the runner so that the parts that only read an
outcome (the finisher, the front) do not import torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reelserve.engine.cost_model import CallTiming
from reelserve.schemas import JobError


@dataclass
class BatchOutcome:
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # job id -> (F, H, W, 3) in [0, 1]
    # Rows handed out as they finished (the runner's ``on_finished``): their frames are not kept here.
    finished: set[str] = field(default_factory=set)
    # Rows parked whole at a step boundary (preemption): the family's ``Row``s, to resume later.
    parked: dict[str, Any] = field(default_factory=dict)
    # Rows offered to join that never started (the batch made way first): to run another time.
    unstarted: list[str] = field(default_factory=list)
    stopped_at: dict[str, int] = field(default_factory=dict)  # job id -> steps it ran before stopping
    errors: dict[str, JobError] = field(default_factory=dict)  # job id -> why it failed (rows that did not fit)
    # After an out-of-memory: the largest batch that then ran through. None without an OOM, or when
    # nothing fit. The engine lowers its learned maximum batch size for this batch key to it.
    fit_batch_size: int | None = None
    calls: list[CallTiming] = field(default_factory=list)  # one per pipeline call that returned videos
    inference_s: float = 0.0  # wall time of the whole run, retries included
    swap_s: float = 0.0  # of it, bringing the model's weights onto the device first (several models)
