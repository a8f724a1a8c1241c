"""What is queued and running, kept in the terms the completion estimate needs: rows per (level,
batch key), and each running batch's predicted end (one per pipeline lane). Counts, not lists, so
an estimate costs O(batch keys) however long the queue is."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from reelserve.schemas import GenerationParams

Predict = Callable[[GenerationParams, int], float]  # (params, batch size) -> seconds of one call


@dataclass(frozen=True)
class _Queued:
    level: int
    tier: str
    params: GenerationParams
    deadline_at: float | None


class QueueLedger:
    """
    :param predict: the cost model's estimate of one pipeline call.
    :param batch_limit: most rows one call of a batch key takes (the batcher's, which learns from OOMs).
    :param finish: seconds to write one job's outputs after its call (rows are written one by one).
    """

    def __init__(
        self,
        predict: Predict,
        batch_limit: Callable[[str], int],
        clock: Callable[[], float] = time.time,
        finish: Callable[[GenerationParams], float] = lambda params: 0.0,
    ):
        self.predict = predict
        self.finish = finish
        self.batch_limit = batch_limit
        self._clock = clock
        self._jobs: dict[str, _Queued] = {}
        self._rows: Counter[tuple[int, str]] = Counter()  # (level, batch key) -> queued rows
        self._sample: dict[str, GenerationParams] = {}  # batch key -> params of one of its jobs
        self._by_tier: Counter[str] = Counter()
        self._running: dict[int, tuple[float, float]] = {}  # lane -> (started, predicted seconds)
        self.lanes = 1  # pipeline lanes running batches at once (engine.lanes)

    def add(
        self, job_id: str, level: int, tier: str, params: GenerationParams, deadline_at: float | None = None
    ) -> None:
        key = params.batch_key()
        self._jobs[job_id] = _Queued(level, tier, params, deadline_at)
        self._rows[level, key] += 1
        self._sample.setdefault(key, params)
        self._by_tier[tier] += 1

    def remove(self, job_id: str) -> bool:
        queued = self._jobs.pop(job_id, None)
        if queued is None:
            return False
        key = queued.params.batch_key()
        self._rows[queued.level, key] -= 1
        if self._rows[queued.level, key] <= 0:
            del self._rows[queued.level, key]
            if not any(k == key for _, k in self._rows):
                self._sample.pop(key, None)
        self._by_tier[queued.tier] -= 1
        return True

    def level_of(self, job_id: str) -> int:
        queued = self._jobs.get(job_id)
        return queued.level if queued is not None else 0

    def tier_depth(self, tier: str) -> int:
        return self._by_tier.get(tier, 0)

    def depth_by_level(self) -> dict[int, int]:
        depth: Counter[int] = Counter()
        for (level, _), n in self._rows.items():
            depth[level] += n
        return dict(depth)

    def depth_by_tier(self) -> dict[str, int]:
        return {tier: n for tier, n in self._by_tier.items() if n > 0}

    def start_batch(self, params: GenerationParams, rows: int, lane: int = 0) -> float:
        """Record that a batch started on ``lane``; returns its predicted seconds."""
        seconds = self.predict(params, rows)
        self._running[lane] = (self._clock(), seconds)
        return seconds

    def end_batch(self, lane: int = 0) -> None:
        self._running.pop(lane, None)

    def _remaining(self) -> list[float]:
        now = self._clock()
        # An overrun batch is not over: assume a little more of it, not none.
        return [max(predicted - (now - started), 0.05 * predicted) for started, predicted in self._running.values()]

    def running_remaining(self) -> float:
        """Seconds until a lane is free for the next batch: none while one is idle."""
        remaining = self._remaining()
        return min(remaining) if len(remaining) >= self.lanes else 0.0

    def _spread(self, calls: list[float]) -> float:
        """Seconds until the running batches and then ``calls`` are done on ``lanes`` lanes at once:
        their sum shared out, but never less than the longest one (a call runs on one lane)."""
        remaining = self._remaining()
        return max(sum(calls, sum(remaining)) / self.lanes, max(calls, default=0.0), max(remaining, default=0.0))

    def work_ahead(self, level: float, params: GenerationParams | None = None) -> float:
        """Seconds of pipeline time before a new job at ``level`` (with ``params``, if given) is done:
        the running batch's rest, every queued row at its level or more urgent, batched as the
        batcher would, and the new job's own call."""
        return self._work(lambda lvl: lvl <= level, params)

    def work_at(self, level: int, params: GenerationParams | None = None) -> float:
        """As ``work_ahead``, counting the rows of ``level`` only: what a reserved share must get through."""
        return self._work(lambda lvl: lvl == level, params)

    def _work(self, counts: Callable[[int], bool], params: GenerationParams | None) -> float:
        rows: Counter[str] = Counter()
        for (lvl, key), n in self._rows.items():
            if counts(lvl):
                rows[key] += n
        sample = dict(self._sample)
        if params is not None:
            rows[params.batch_key()] += 1
            sample[params.batch_key()] = params
        calls: list[float] = []
        for key, n in rows.items():
            limit = max(1, self.batch_limit(key))
            full, rest = divmod(n, limit)
            calls += [self.predict(sample[key], limit)] * full + ([self.predict(sample[key], rest)] if rest else [])
        return self._spread(calls)

    def deadline_pressure(self, level: int) -> float:
        """The least share of the pipeline ``level`` needs from now for each of its queued jobs to
        finish by its deadline, served first in first out: the largest (work up to and including a
        job) / (time left to its deadline). Above 1: some cannot make it even alone."""
        now = self._clock()
        pressure, rows = 0.0, 0
        for queued in self._jobs.values():  # insertion order: arrival order
            if queued.level != level:
                continue
            rows += 1
            if queued.deadline_at is None:
                continue
            limit = max(1, self.batch_limit(queued.params.batch_key()))
            work = self._spread([self.predict(queued.params, limit)] * math.ceil(rows / limit))
            pressure = max(pressure, work / max(queued.deadline_at - now, 1e-3))
        return pressure

    def queue_delay(self) -> float:
        """Seconds until everything queued now has run: the load signal for degradation."""
        return self.work_ahead(level=math.inf)
