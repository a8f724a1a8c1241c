"""A discrete-event simulation of the server's scheduler, with call durations from a ``CostModel``.

Scheduler semantics, as in reelserve/engine (batcher.py, shares.py), on the brokers' own queue
(``reelserve.jobs.waiting.WaitingJobs``: taking by key and level, and preemption, are that code):

- Jobs wait in per-level FIFO queues. A free worker opens a batch with the oldest job of the tier
  owed its reserved share (``ReservedShares`` credit, counted when batches finish), else of the
  most urgent tier (lowest level) with work.
- Queued jobs with the same batch key join, most urgent tier first (the owed tier first in a
  batch opened for its share), then oldest, up to
  ``max_batch_size``. A batch that is not full waits up to ``max_wait_s`` for arrivals to join, then
  runs for ``CostModel.predict(params, rows)`` seconds.
- While it waits, a batch not opened for a reserved share is preempted by an arriving job of a more
  urgent tier that no idle worker took: its jobs go back to the front of their queues.
- A finished batch's outputs are written one job after another (``CostModel.finish``) on the
  worker's encode thread, while the worker runs its next batch: a job ends when its outputs are.
- A request identical to one already finished is a cache hit: answered at once, no pipeline time.
  One identical to a request still queued or running runs again (no coalescing).
- A tier whose queue holds ``max_queue`` jobs rejects the next one.

Deterministic: one seeded RNG draws the arrivals; the simulation itself draws nothing.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from reelserve.engine.cost_model import CostModel
from reelserve.engine.shares import ReservedShares
from reelserve.jobs.waiting import WaitingJobs
from reelserve.planning.report import JobRecord, PlanReport, tier_report
from reelserve.planning.workload import Workload


@dataclass(frozen=True)
class Arrival:
    """One request: when, what (index into ``Workload.mix``), which tier, and its content (equal for
    identical requests: a repeat has its source's content)."""

    time_s: float
    shape: int
    tier: str
    content: int


def generate_arrivals(workload: Workload) -> list[Arrival]:
    """The workload's arrivals, from its seed. As in the load generator, a repeat resends a uniformly
    chosen earlier non-repeat request: same shape, same tier."""
    rng = random.Random(workload.seed)
    shape_weights = [shape.weight for shape in workload.mix]
    tier_names, tier_weights = zip(*workload.tier_mix.items(), strict=True)
    changes = sorted(workload.rate_changes())
    arrivals: list[Arrival] = []
    fresh: list[Arrival] = []
    t = 0.0
    while len(arrivals) < workload.requests:
        gap = rng.expovariate(workload.rate_at(t))
        boundary = next((c for c in changes if c > t), math.inf)
        if t + gap >= boundary:  # the rate changes first; arrivals are memoryless, so draw again from there
            t = boundary
            continue
        t += gap
        if workload.max_duration_s is not None and t > workload.max_duration_s:
            break
        if fresh and rng.random() < workload.repeat_rate:
            source = fresh[rng.randrange(len(fresh))]
            arrivals.append(Arrival(t, source.shape, source.tier, source.content))
            continue
        tier = rng.choices(tier_names, tier_weights)[0]
        shape = rng.choices(range(len(workload.mix)), shape_weights)[0]
        fresh.append(Arrival(t, shape, tier, len(arrivals)))
        arrivals.append(fresh[-1])
    return arrivals


def simulate(
    workload: Workload,
    cost_model: CostModel,
    *,
    workers: int | None = None,
    arrivals: list[Arrival] | None = None,
) -> PlanReport:
    """Run the workload through ``workers`` simulated pipelines (default ``workload.server.workers``).

    :param arrivals: replay these instead of generating them from the workload (e.g. a measured
        run's requests), in any order; ``shape`` indexes ``workload.mix``. ValueError if one names
        a shape or tier the workload lacks."""
    if arrivals is None:
        arrivals = generate_arrivals(workload)
    known = {tier.name for tier in workload.server.tiers}
    for arrival in arrivals:
        if arrival.tier not in known or not 0 <= arrival.shape < len(workload.mix):
            raise ValueError(f"{arrival} names a tier or shape the workload does not have")
    simulation = _Simulation(workload, cost_model, workers or workload.server.workers)
    return simulation.run(sorted(arrivals, key=lambda arrival: arrival.time_s))


@dataclass
class _Worker:
    index: int
    batch: list[JobRecord] = field(default_factory=list)
    collecting: bool = False
    busy: bool = False
    preempt_below: int | None = None  # a waiting batch gives way to a job of a level below this
    opened_for: int | None = None  # the level whose reserved share opened the batch
    writer_free_s: float = 0.0  # when its encode thread is done with the outputs already handed to it
    generation: int = 0  # tells a stale "stop waiting" event from the current batch's


_FINISH, _STOP_WAITING = 0, 1


@dataclass(frozen=True)
class _Queued:
    job: JobRecord
    level: int

    @property
    def batch_key(self) -> str:
        return self.job.batch_key


class _Simulation:
    def __init__(self, workload: Workload, cost_model: CostModel, workers: int) -> None:
        self.workload = workload
        self.server = workload.server
        self.tiers = sorted(self.server.tiers, key=lambda tier: tier.level)
        self.level = {tier.name: tier.level for tier in self.tiers}
        self.max_batch = self.server.max_batch_size
        self.params = [workload.params(shape) for shape in workload.mix]
        self.keys = [params.batch_key() for params in self.params]
        self.cost_model = cost_model
        self.durations: dict[tuple[int, int], float] = {}
        self.workers = [_Worker(i) for i in range(workers)]
        self.events: list[tuple[float, int, int, int, int]] = []  # time, seq, kind, worker, generation
        self.seq = 0
        self.now = 0.0
        self.waiting: WaitingJobs[_Queued] = WaitingJobs()  # by job index, as the servers' brokers queue
        self.queued = {tier.name: 0 for tier in self.tiers}  # per tier, for its max_queue
        self.collecting: dict[str, list[_Worker]] = {}
        self.shares = ReservedShares(
            {tier.level: tier.reserved_share for tier in self.tiers}, clock=lambda: self.now
        )
        self.finished_content: set[int] = set()
        self.shape_of: dict[int, int] = {}
        self.batches = self.rows = 0
        self.busy_s = 0.0

    def run(self, arrivals: list[Arrival]) -> PlanReport:
        jobs: list[JobRecord] = []
        for arrival in arrivals:
            self._advance_to(arrival.time_s)
            job = JobRecord(
                len(jobs),
                arrival.time_s,
                arrival.tier,
                arrival.content,
                self.keys[arrival.shape],
                self.workload.deadline_s(arrival.tier),
            )
            self.shape_of[job.index] = arrival.shape
            jobs.append(job)
            self._arrive(job)
        self._advance_to(math.inf)
        return self._report(jobs)

    def _advance_to(self, t: float) -> None:
        """Handle every event up to ``t`` (ties before an arrival at ``t``)."""
        while self.events and self.events[0][0] <= t:
            self.now, _seq, kind, index, generation = heapq.heappop(self.events)
            worker = self.workers[index]
            if kind == _FINISH:
                self._finish(worker)
            elif worker.collecting and worker.generation == generation:
                self._start(worker)
        if t != math.inf:
            self.now = t

    def _push(self, time_s: float, kind: int, worker: _Worker) -> None:
        self.seq += 1
        heapq.heappush(self.events, (time_s, self.seq, kind, worker.index, worker.generation))

    # -- arrivals and queues -------------------------------------------------------------------

    def _arrive(self, job: JobRecord) -> None:
        if job.content in self.finished_content:
            job.cache_hit = True
            job.started_s = job.finished_s = job.arrival_s
            return
        for worker in self.collecting.get(job.batch_key, []):
            worker.batch.append(job)
            if worker.preempt_below is not None:
                worker.preempt_below = min(worker.preempt_below, self.level[job.tier])
            if len(worker.batch) >= self.max_batch:
                self._start(worker)
            return
        if self.queued[job.tier] >= self.server.tier(job.tier).max_queue:
            job.rejected = True
            return
        self.waiting.append(str(job.index), _Queued(job, self.level[job.tier]))
        self.queued[job.tier] += 1
        self._dispatch()
        if str(job.index) in self.waiting:  # no idle worker took it
            self._preempt()

    def _preempt(self) -> None:
        """A waiting batch gives way to more urgent work that could not join it (as ``Preempted``)."""
        for worker in self.workers:
            below = worker.preempt_below
            if worker.collecting and below is not None and self.waiting.urgent(below, worker.batch[0].batch_key):
                self._stop_collecting(worker)
                self.waiting.push_front((str(job.index), _Queued(job, self.level[job.tier])) for job in worker.batch)
                for job in worker.batch:
                    self.queued[job.tier] += 1
                worker.batch = []
                self._dispatch()
                return

    def _take(self, batch_key: str | None = None, level: int | None = None) -> JobRecord | None:
        """The oldest queued job of the most urgent level (``level`` first), of ``batch_key`` if given."""
        index = self.waiting.first(batch_key, level)
        if index is None:
            return None
        job = self.waiting.pop(index).job
        self.queued[job.tier] -= 1
        return job

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.busy or worker.collecting:
                continue
            if not self.waiting:
                return
            self._open(worker, self.shares.owed_level(self.waiting.depth_by_level()))

    # -- batches ---------------------------------------------------------------------------------

    def _open(self, worker: _Worker, owed: int | None) -> None:
        """A batch opened with the oldest job of the level ``owed`` its reserved share, if any, else
        of the most urgent; it fills with that level's jobs of its key first (as ``Batcher.collect``)."""
        opener = self._take(level=owed)
        assert opener is not None  # there is queued work
        worker.batch = [opener]
        worker.opened_for = owed
        while len(worker.batch) < self.max_batch and (joiner := self._take(opener.batch_key, owed)):
            worker.batch.append(joiner)
        if len(worker.batch) >= self.max_batch or self.server.max_wait_s <= 0:
            self._start(worker)
            return
        # A batch opened for a reserved share is owed its turn: more urgent work may not preempt it.
        worker.preempt_below = None if owed is not None else min(self.level[job.tier] for job in worker.batch)
        worker.collecting = True
        worker.generation += 1
        self.collecting.setdefault(opener.batch_key, []).append(worker)
        self._push(self.now + self.server.max_wait_s, _STOP_WAITING, worker)

    def _stop_collecting(self, worker: _Worker) -> None:
        worker.collecting = False
        self.collecting[worker.batch[0].batch_key].remove(worker)

    def _start(self, worker: _Worker) -> None:
        if worker.collecting:
            self._stop_collecting(worker)
        rows = len(worker.batch)
        duration = self._duration(self.shape_of[worker.batch[0].index], rows)
        for job in worker.batch:
            job.started_s = self.now
        worker.busy = True
        self.batches += 1
        self.rows += rows
        self.busy_s += duration
        self._push(self.now + duration, _FINISH, worker)

    def _finish(self, worker: _Worker) -> None:
        duration = self._duration(self.shape_of[worker.batch[0].index], len(worker.batch))
        by_level: dict[int, float] = {}
        # Outputs are written one job after another on the worker's encode thread, beside its next batch.
        write_s = self.cost_model.finish.predict(self.params[self.shape_of[worker.batch[0].index]])
        written = max(self.now, worker.writer_free_s)
        for job in worker.batch:
            written += write_s
            job.finished_s = written
            self.finished_content.add(job.content)
            level = self.level[job.tier]
            by_level[level] = by_level.get(level, 0.0) + duration / len(worker.batch)
        self.shares.record(by_level, {self.level[name]: n for name, n in self.queued.items()}, worker.opened_for)
        worker.writer_free_s = written
        worker.batch = []
        worker.busy = False
        self._dispatch()

    def _duration(self, shape: int, rows: int) -> float:
        duration = self.durations.get((shape, rows))
        if duration is None:
            duration = self.durations[(shape, rows)] = self.cost_model.predict(self.params[shape], rows)
        return duration

    def _report(self, jobs: list[JobRecord]) -> PlanReport:
        simulated_s = max(
            (job.arrival_s if job.finished_s is None else job.finished_s for job in jobs), default=0.0
        )
        workers = len(self.workers)
        return PlanReport(
            workers=workers,
            max_batch_size=self.max_batch,
            simulated_s=simulated_s,
            batches=self.batches,
            mean_batch_size=self.rows / self.batches if self.batches else 0.0,
            gpu_seconds=self.busy_s,
            utilisation=self.busy_s / (workers * simulated_s) if simulated_s > 0 else 0.0,
            overall=tier_report("all", jobs, simulated_s),
            tiers=[
                tier_report(tier.name, [job for job in jobs if job.tier == tier.name], simulated_s)
                for tier in self.tiers
                if any(job.tier == tier.name for job in jobs)
            ],
        )
