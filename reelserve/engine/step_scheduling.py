"""What changes a running batch between two steps, on the loop's side: the rows of a running batch
(``RunningRows``), the feeder that lets waiting jobs join it or has it make way (``join_feeder``),
and the parked rows of the jobs that made way (``parked_store``), back in the queue until they run
again. The lane's side is ``joining.JoinQueue`` and ``PipelineRunner.run``.

A draining worker (``make_way_all``) parks every running row to storage (``parked_rows``: plain
tensors, tied to the model version and settings) and hands the jobs back; whichever worker runs a
job next resumes it from its step (a row parked by other weights or settings starts again)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from reelserve.engine.events import Events, status_event
from reelserve.engine.finisher import RUNNING, RunningJobs
from reelserve.engine.step_decision import grows_cheaply
from reelserve.engine.join_feeder import JoinFeeder, StepPolicy
from reelserve.engine.joining import JoinQueue
from reelserve.engine.parked_store import ParkedStore
from reelserve.engine.scheduler import Scheduler
from reelserve.engine.storage_keys import parked_key
from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.base import Broker
from reelserve.metrics import Metrics
from reelserve.schemas import Job, JobStatus
from reelserve.storage.base import Storage

log = logging.getLogger(__name__)


class RunningRows:
    """The jobs of a running batch, by id, and when each started running (``perf_counter``): the
    batch's own, and those that joined it. Grows on the loop; the lane reads a job only after it
    joined."""

    def __init__(self, batch: list[Job], started: float) -> None:
        self.jobs = {job.id: job for job in batch}
        self.started = dict.fromkeys(self.jobs, started)
        self.finished: set[str] = set()  # handed out (added on the lane's thread)
        self.left: set[str] = set()  # swapped out for more urgent rows: back in the queue, no longer this batch's
        self.requeues: list[asyncio.Task[None]] = []  # their requeues, awaited before the batch settles

    def join(self, job: Job) -> None:
        self.started[job.id] = time.perf_counter()
        self.jobs[job.id] = job

    def running_level(self, level_of: Callable[[Job], int]) -> int:
        """The most urgent level among the rows not handed out yet (the last one's, if none is left)."""
        levels = [level_of(job) for job in self.unfinished()] or [level_of(next(reversed(self.jobs.values())))]
        return min(levels)

    def least_urgent(self, level_of: Callable[[Job], int]) -> Job | None:
        """The running row to swap out for a more urgent one: the least urgent, the latest of those."""
        running = self.unfinished()
        return max(running, key=lambda job: (level_of(job), self.started[job.id])) if running else None

    def unfinished(self) -> list[Job]:
        """The jobs whose rows were not handed out: stopped, failed, or never run (not those swapped out)."""
        return [job for job_id, job in self.jobs.items() if job_id not in self.finished and job_id not in self.left]


@dataclass
class Feeding:
    """A running batch's feeder: its task, and the event that wakes it when rows leave."""

    task: asyncio.Task[None]
    wake: asyncio.Event


class StepScheduling:
    """The batch loop's part in continuous batching and preemption.

    :param claim: claims job ids for a lane, as joiners (``BatchLoop.claim``).
    :param reclaimed: job ids in progress by this worker that the next claim may take again.
    """

    def __init__(
        self, *, policy: StepPolicy, broker: Broker, scheduler: Scheduler, store: AsyncJobStore, metrics: Metrics,
        bus: Events, running: RunningJobs, reclaimed: set[str], storage: Storage,
        claim: Callable[[list[str], int], Awaitable[list[Job]]],
    ) -> None:
        self.policy, self.broker, self.scheduler, self.store = policy, broker, scheduler, store
        self.metrics, self.bus, self.running, self.reclaimed, self.claim = metrics, bus, running, reclaimed, claim
        self.storage = storage
        self.parked = ParkedStore(policy.parked_limit_bytes)
        self._feeders: set[JoinFeeder] = set()
        self._open: set[JoinQueue] = set()  # the running batches' queues
        self.spilling = False  # draining: parked rows go to storage
        self._checkpointed: dict[str, tuple[int, str]] = {}  # job id -> (step, key) of its last checkpoint

    def start(self, rows: RunningRows, lane: int, joins_rows: bool, lanes_busy: Callable[[], bool],
              opened_for: int | None = None) -> tuple[JoinQueue | None, Feeding | None]:
        """A join queue and its feeder for a batch that can take joiners or make way (``joins_rows``:
        its lane's runner can; ``lanes_busy``: whether every lane runs a batch now). A batch opened
        for a level's reserved share (``opened_for``) takes no joiners, so its time goes to that
        level, and makes way for nothing until the share's time is spent (``owed_seconds``); then,
        like any batch, for more urgent work: parking loses none of its steps."""
        if not joins_rows:
            return None, None
        first = next(iter(rows.jobs.values()))
        joins = JoinQueue(self.scheduler.batcher.limit_for(first.params.batch_key()), len(rows.jobs))
        self._open.add(joins)
        if self.spilling:
            joins.park_all()
        policy = self.policy if opened_for is None else replace(self.policy, join=False)
        owed_until = time.monotonic() + (0.0 if opened_for is None else self.scheduler.shares.owed_seconds(opened_for))
        if not (policy.join or policy.preempt):
            return joins, None
        feeder = JoinFeeder(
            broker=self.broker, joins=joins, shape=first.params.shape_key(),
            level=min(map(self.scheduler.level_of, rows.jobs.values())),
            claim=lambda job_ids: self.claim(job_ids, lane), hand_back=self.hand_back,
            joined=functools.partial(self._joined, rows), lanes_busy=lanes_busy,
            joined_rows=self.metrics.joined_rows, policy=policy, level_of=self.scheduler.level_of,
            running_level=lambda: rows.running_level(self.scheduler.level_of),
            grows_cheaply=lambda size: grows_cheaply(*(self.scheduler.cost_model.predict_step(first.params, rows)
                                                       for rows in (1, size, size + 1))),
            owed=lambda: max(0.0, owed_until - time.monotonic()),
            least_urgent=lambda: rows.least_urgent(self.scheduler.level_of),
        )
        task = asyncio.create_task(feeder.run(), name="reelserve-join-feeder")
        self._feeders.add(feeder)
        task.add_done_callback(lambda _: self._feeders.discard(feeder))
        return joins, Feeding(task, feeder.wake)

    def end(self, joins: JoinQueue | None) -> None:
        """The batch of ``joins`` ended."""
        self._open.discard(joins)  # type: ignore[arg-type]

    def make_way_all(self) -> bool:
        """A drain: every running batch parks its rows at its next step, to storage, and hands their
        jobs back. False (nothing done) without a ``resume_version`` to tie the parked rows to."""
        if self.policy.resume_version is None:
            return False
        self.spilling = True
        for joins in self._open:
            joins.park_all()
        return True

    def resume(self, rows: RunningRows, device: Any, job_id: str) -> Any | None:
        """The parked row of ``job_id`` to go on from (on the lane's thread): kept in memory, or left
        in storage by a draining worker; None when there is none or it is stale."""
        row = self.parked.take(job_id)
        job = rows.jobs.get(job_id)
        if row is None and job is not None and job.parked_key is not None and self.policy.resume_version is not None:
            row = self._unspill(job_id, job.parked_key, device)
        if row is not None:
            self.metrics.resumed_steps.inc(row.step)
        return row

    def _unspill(self, job_id: str, key: str, device: Any) -> Any | None:
        from reelserve.engine.parked_rows import StaleParkedRow, resume_row  # torch: a worker's import

        assert self.policy.resume_version is not None
        row = None
        try:
            row = resume_row(self.storage.get(key), self.policy.resume_version, device)
        except StaleParkedRow as exc:
            log.info("%s starts again: %s", job_id, exc)
        except Exception as exc:  # noqa: BLE001 - gone or unreadable: the job starts again, nothing else is lost
            log.warning("%s starts again: its parked row could not be read (%s: %s)", job_id, type(exc).__name__, exc)
        self._forget_spilled(key)
        return row

    def checkpointer(self, rows: RunningRows) -> Callable[[list[Any]], None] | None:
        """``Boundary.checkpoint`` for a batch, when checkpoints are on (on the lane's thread): every
        ``checkpoint_steps`` steps each running row's state goes to storage, where the next run of a
        job whose worker was killed finds it (``find_checkpoint``)."""
        every = self.policy.checkpoint_steps
        if not every or self.policy.resume_version is None:
            return None

        def checkpoint(live: list[Any]) -> None:
            for row in live:
                last = self._checkpointed.get(row.key)
                if row.step % every == 0 and row.step > 0 and not row.done and (last is None or last[0] != row.step):
                    self._checkpointed[row.key] = (row.step, self._spill(rows.jobs[row.key], row))

        return checkpoint

    async def find_checkpoint(self, job: Job) -> None:
        """Before ``job`` runs again (its last run was lost): the checkpoint that run left, if any,
        becomes its ``parked_key``."""
        if job.attempts < 1 or job.parked_key is not None or self.policy.resume_version is None:
            return
        key = parked_key(job.id, job.attempts)
        try:
            if await asyncio.to_thread(self.storage.exists, key):
                job.parked_key = key
        except Exception as exc:  # noqa: BLE001 - unreadable storage: the job starts from its first step
            log.warning("looking for %s's checkpoint failed (%s: %s)", job.id, type(exc).__name__, exc)

    def row_done(self, job_id: str) -> None:
        """A row finished: its checkpoint is not needed any more (on the lane's thread)."""
        last = self._checkpointed.pop(job_id, None)
        if last is not None:
            self._forget_spilled(last[1])

    def _forget_spilled(self, key: str) -> None:
        try:
            self.storage.delete_prefix(key)
        except Exception as exc:  # noqa: BLE001 - an orphan file under the job's prefix; deleting the job removes it
            log.warning("removing parked row %s failed (%s: %s)", key, type(exc).__name__, exc)

    def wake(self) -> None:
        """The lanes' business changed: feeders look again."""
        for feeder in self._feeders:
            feeder.wake.set()

    def swapped_out(self, rows: RunningRows, job_id: str, row: Any) -> None:
        """On the loop: a row the lane took out of its running batch for a more urgent one goes back
        to the queue now (the batch goes on); ``rows.requeues`` holds the work until it is done."""
        rows.left.add(job_id)

        async def requeue() -> None:
            await self.requeue_parked(rows.jobs[job_id], row)
            self.running.claimed.discard(job_id)

        rows.requeues.append(asyncio.create_task(requeue(), name="reelserve-requeue-swapped"))

    async def requeue_parked(self, job: Job, row: Any) -> None:
        """A row that made way: its state kept (``parked``; in storage while draining, or when memory
        holds ``parked_limit_bytes`` already), its job back at the front of its queue."""
        update: dict[str, Any] = {"status": JobStatus.queued}
        if not self.spilling:
            self.metrics.preempted_rows.inc()
            update["preempted"] = job.preempted + 1
        to_storage = self.policy.resume_version is not None and (self.spilling or not self.parked.fits(row))
        if to_storage:
            update["parked_key"] = await asyncio.to_thread(self._spill, job, row)
        else:
            self.parked.put(job.id, row)
        parked = job.model_copy(update=update)
        try:
            saved: bool | None = await self.store.save(parked, expect=RUNNING)
        except Exception as exc:  # noqa: BLE001 - kept in progress: the next claim takes it again
            log.warning("saving parked %s failed (%s: %s)", job.id, type(exc).__name__, exc)
            saved = None
        if saved is False:  # cancelled or deleted meanwhile
            self.parked.discard(job.id)
            return
        if saved is None:
            self.reclaimed.add(job.id)
        else:
            self.bus.publish(status_event(parked))
        await self.scheduler.requeue_parked(parked)

    def _spill(self, job: Job, row: Any) -> str:
        from reelserve.engine.parked_rows import park_bytes  # torch: a worker's import

        key = parked_key(job.id, job.attempts)
        assert self.policy.resume_version is not None
        self.storage.put(key, park_bytes(row, self.policy.resume_version))
        return key

    def _joined(self, rows: RunningRows, job: Job) -> None:
        rows.join(job)
        self.running.claimed.add(job.id)  # its lease is kept alive, and a drain waits for it

    async def hand_back(self, job_ids: list[str], claimed: bool) -> None:
        """Taken jobs that did not start back at the front of the queue; ``claimed``: in progress by
        this worker already."""
        if claimed:  # in progress in the store, by this worker: the next claim takes it again
            self.reclaimed.update(job_ids)
            for job_id in job_ids:
                self.running.claimed.discard(job_id)
        await self.scheduler.hand_back(job_ids)
