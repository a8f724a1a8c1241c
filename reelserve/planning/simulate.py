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
- With continuous batching or preemption on (``ServerConfig``, as the server's settings), a batch
  runs step by step (``step_batch``: time per round of steps and per joiner from the cost model).
  At each step boundary its finished rows leave and their outputs are written; then, while every
  worker runs a batch, ``step_decision.decide_step`` (the engine's ``JoinFeeder`` decision, on this
  same queue) lets waiting jobs of its shape join, stops its growth, or has it make way: its rows
  are parked with their steps, their jobs go back to the front of their queues, and each resumes
  from its step when it runs again. Both off: a batch runs whole, as one call.
- A request identical to one already finished is a cache hit: answered at once, no pipeline time.
  One identical to a request still queued or running runs again (no coalescing).
- A tier whose queue holds ``max_queue`` jobs rejects the next one.

Deterministic: one seeded RNG draws the arrivals; the simulation itself draws nothing.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from reelserve.engine.cost_model import CostModel
from reelserve.engine.shares import ReservedShares
from reelserve.engine.step_decision import Move, StepPolicy, decide_step, grows_cheaply, room_to_grow
from reelserve.jobs.waiting import WaitingJobs
from reelserve.planning.arrivals import Arrival, generate_arrivals
from reelserve.planning.report import JobRecord, PlanReport, tier_report
from reelserve.planning.step_batch import StepBatch, StepRow
from reelserve.planning.workload import Workload

__all__ = ["Arrival", "generate_arrivals", "simulate"]  # the arrivals live in ``arrivals``, named here too


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
    owed_until_s: float = 0.0  # until then a batch opened for a share makes way for nothing
    writer_free_s: float = 0.0  # when its encode thread is done with the outputs already handed to it
    generation: int = 0  # tells a stale "stop waiting" event from the current batch's
    running: StepBatch | None = None  # its batch, run step by step (continuous batching or preemption on)


_FINISH, _STOP_WAITING, _STEP = 0, 1, 2


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
        self.rounds = self.round_rows = 0  # step by step: rounds of steps run, and their rows summed
        self.busy_s = 0.0
        self.policy = StepPolicy(join=self.server.continuous_batching, preempt=self.server.preemption)
        self.step_level = self.policy.join or self.policy.preempt  # else whole batches, as before
        self.progress: dict[int, int] = {}  # job index -> steps its parked row had done

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
            elif kind == _STEP:
                self._step(worker)
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
        worker.owed_until_s = self.now + (0.0 if owed is None else self.shares.owed_seconds(owed))
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
        for job in worker.batch:
            if job.started_s is None:  # a parked job's wait ended when it first ran
                job.started_s = self.now
        worker.busy = True
        self.batches += 1
        self.rows += rows
        if self.step_level:
            self._run_steps(worker)
            return
        duration = self._duration(self.shape_of[worker.batch[0].index], rows)
        self.busy_s += duration
        self._push(self.now + duration, _FINISH, worker)

    def _finish(self, worker: _Worker) -> None:
        duration = self._duration(self.shape_of[worker.batch[0].index], len(worker.batch))
        by_level: dict[int, float] = {}
        self._write_outputs(worker, worker.batch)
        for job in worker.batch:
            level = self.level[job.tier]
            by_level[level] = by_level.get(level, 0.0) + duration / len(worker.batch)
        self.shares.record(by_level, self._queued_by_level(), worker.opened_for)
        worker.batch = []
        worker.busy = False
        self._dispatch()

    def _write_outputs(self, worker: _Worker, jobs: list[JobRecord]) -> None:
        """Outputs are written one job after another on the worker's encode thread, beside its next
        batch (or step): a job ends when its outputs are."""
        written = max(self.now, worker.writer_free_s)
        for job in jobs:
            written += self.cost_model.finish.predict(self.params[self.shape_of[job.index]])
            job.finished_s = written
            self.finished_content.add(job.content)
        worker.writer_free_s = written

    def _queued_by_level(self) -> dict[int, int]:
        return {self.level[name]: n for name, n in self.queued.items()}

    # -- step by step (continuous batching, preemption) --------------------------------------------

    def _run_steps(self, worker: _Worker) -> None:
        shape = self.params[self.shape_of[worker.batch[0].index]].shape_key()
        batch = worker.running = StepBatch([self._row(job) for job in worker.batch], shape, growing=self.policy.join)
        # As the engine: a batch opened for a reserved share takes no joiners (it may still make way).
        batch.growing = batch.growing and worker.opened_for is None
        self._next_round(worker, batch.opening_s(self.cost_model))

    def _row(self, job: JobRecord) -> StepRow:
        """A job's row, at the step its parked row reached (0 if it never ran)."""
        params = self.params[self.shape_of[job.index]]
        return StepRow(job, params, self.level[job.tier], self.progress.pop(job.index, 0))

    def _next_round(self, worker: _Worker, before_s: float = 0.0) -> None:
        assert worker.running is not None
        duration = before_s + worker.running.round_s(self.cost_model)
        self.rounds += 1
        self.round_rows += len(worker.running.rows)
        self.busy_s += duration
        self._push(self.now + duration, _STEP, worker)

    def _step(self, worker: _Worker) -> None:
        """A step boundary: finished rows leave (their outputs are written at once); then, while
        every worker runs a batch, the batch takes joiners or makes way as the engine's feeder would.
        The feeder chose during the step, with the room the rows running then left it."""
        batch = worker.running
        assert batch is not None
        room = room_to_grow(self.max_batch - len(batch.rows), batch.joined, self.max_batch)
        self._write_outputs(worker, [row.job for row in batch.advance()])
        if batch.deciding and all(other.busy for other in self.workers) and self._cross(batch, room, worker):
            self._make_way(worker)
        elif batch.rows:
            self._next_round(worker)
        else:
            self._end_steps(worker)

    def _cross(self, batch: StepBatch, room: int, worker: _Worker) -> bool:
        """Ask ``step_decision.decide_step`` (the engine feeder's decision) until it waits; joiners
        join now. True: the batch makes way."""
        batch.level = min((row.level for row in batch.rows), default=batch.level)  # the rows still running
        while True:
            cheap = not batch.rows or grows_cheaply(*(self.cost_model.predict_step(batch.rows[0].params, size)
                                                      for size in (1, len(batch.rows), len(batch.rows) + 1)))
            least = max(reversed(batch.rows), key=lambda row: row.level, default=None)  # the last of the least urgent
            decision = decide_step(self.waiting, self.policy, shape=batch.shape, level=batch.level, room=room,
                                   growing=batch.growing, cheap=cheap, owed=self.now < worker.owed_until_s,
                                   least_level=None if least is None else least.level)
            if decision.move in (Move.JOIN, Move.SWAP):
                assert decision.job_id is not None
                if decision.move is Move.SWAP and least is not None:  # preemption of one row
                    batch.rows.remove(least)
                    self._requeue([least])
                job = self.waiting.pop(decision.job_id).job
                self.queued[job.tier] -= 1
                if job.started_s is None:
                    job.started_s = self.now
                batch.join(self._row(job), self.cost_model)
                room -= decision.move is Move.JOIN
            elif decision.move is Move.STOP_GROWING:
                batch.growing = False
            else:
                batch.deciding = decision.move is not Move.DONE
                return decision.move is Move.MAKE_WAY

    def _make_way(self, worker: _Worker) -> None:
        assert worker.running is not None
        self._requeue(worker.running.rows)
        self._end_steps(worker)

    def _requeue(self, rows: list[StepRow]) -> None:
        """Preemption: rows parked with their steps, their jobs back at the front of their queues."""
        self.progress.update((row.job.index, row.done) for row in rows)
        self.waiting.push_front((str(row.job.index), _Queued(row.job, row.level)) for row in rows)
        for row in rows:
            self.queued[row.job.tier] += 1

    def _end_steps(self, worker: _Worker) -> None:
        assert worker.running is not None
        self.shares.record(worker.running.seconds_by_level, self._queued_by_level(), worker.opened_for)
        worker.running = None
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
            # Step by step a batch may never end while rows come and go: its size is its rows per step.
            mean_batch_size=(self.round_rows / self.rounds if self.rounds else 0.0) if self.step_level
            else (self.rows / self.batches if self.batches else 0.0),
            gpu_seconds=self.busy_s,
            utilisation=self.busy_s / (workers * simulated_s) if simulated_s > 0 else 0.0,
            overall=tier_report("all", jobs, simulated_s),
            tiers=[
                tier_report(tier.name, [job for job in jobs if job.tier == tier.name], simulated_s)
                for tier in self.tiers
                if any(job.tier == tier.name for job in jobs)
            ],
        )
