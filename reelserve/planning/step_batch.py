"""A simulated running batch at step granularity, for a server with continuous batching or preemption
on: its rows, each at its own step, and what a round of steps and a joiner cost by the ``CostModel``.

Time, from what the cost model predicts (a call of B rows costs ``steps × step_s(B) + overhead(B)``):

- A batch that opens with B rows spends ``overhead(B)`` before its first step: the model predicts only
  a call's whole overhead (setup, text encoding, VAE decode), not when each part happens. A batch
  that nothing joins, of one step count, so ends when the whole-request simulation's call ends.
- A round advances every row one step: one call per group of rows the engine evaluates together
  (CFG on or off, at any step: ``denoise_loop.next_group`` with mixed steps), ``step_s`` of the
  group's row count each.
- A joiner adds its marginal overhead, ``overhead(B + 1) - overhead(B)`` (its encoding and its
  decode), to the round it joins before.
- A parked row keeps its steps; the batch it resumes in is a new call and pays its overhead again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reelserve.engine.cost_model import CostModel
from reelserve.planning.report import JobRecord
from reelserve.schemas import GenerationParams
from reelserve.schemas.requests import ShapeKey


@dataclass
class StepRow:
    """One job's row: its request's params, and the steps it has done (kept while it is parked)."""

    job: JobRecord
    params: GenerationParams
    level: int
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.done >= self.params.steps_run


@dataclass
class StepBatch:
    """The rows running on one simulated worker, and the state ``step_decision`` decides from."""

    rows: list[StepRow]
    shape: ShapeKey
    growing: bool  # still takes joiners (``StepPolicy.join``, until ``Move.STOP_GROWING``)
    deciding: bool = True  # False once ``Move.DONE``: nothing changes it any more
    extra_s: float = 0.0  # joiners' overhead, paid with the next round
    seconds_by_level: dict[int, float] = field(default_factory=dict)  # its pipeline time, for the shares
    level: int = field(init=False)  # its most urgent row's, as the feeder keeps it
    joined: int = 0  # rows that joined it so far (``step_decision.room_to_grow`` bounds them)

    def __post_init__(self) -> None:
        self.level = min(row.level for row in self.rows)

    def opening_s(self, costs: CostModel) -> float:
        """The call's overhead, before its first step (see the module docstring)."""
        overhead = costs.predict_overhead(self.rows[0].params, len(self.rows))
        self._charge(overhead, self.rows)
        return overhead

    def join(self, row: StepRow, costs: CostModel) -> None:
        before = costs.predict_overhead(row.params, len(self.rows)) if self.rows else 0.0
        after = costs.predict_overhead(row.params, len(self.rows) + 1)
        marginal = max(0.0, after - before)  # never below 0: predictions grow with batch size anyway
        self.extra_s += marginal
        self._charge(marginal, [row])
        self.rows.append(row)
        self.joined += 1
        self.level = min(self.level, row.level)

    def round_s(self, costs: CostModel) -> float:
        """Seconds of the next round: one step of every row, plus what joiners added."""
        groups: dict[bool, list[StepRow]] = {}
        for row in self.rows:
            groups.setdefault(row.params.guidance_scale > 1.0, []).append(row)
        seconds = self.extra_s  # charged to the joiners already
        for group in groups.values():
            step_s = costs.predict_step(group[0].params, len(group))
            self._charge(step_s, group)
            seconds += step_s
        self.extra_s = 0.0
        return seconds

    def advance(self) -> list[StepRow]:
        """A round ended: every row did one more step; returns those done, which leave."""
        for row in self.rows:
            row.done += 1
        done = [row for row in self.rows if row.finished]
        self.rows = [row for row in self.rows if not row.finished]
        return done

    def _charge(self, seconds: float, rows: list[StepRow]) -> None:
        """Split ``seconds`` evenly over ``rows``' levels."""
        for row in rows:
            self.seconds_by_level[row.level] = self.seconds_by_level.get(row.level, 0.0) + seconds / len(rows)
