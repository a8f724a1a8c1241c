"""Continuous batching, the loop's side: while every lane is busy, a running batch takes the waiting
jobs of its own batch key as it has room, and they join it at its next step boundary (the lane's
side is ``joining.JoinQueue`` and ``PipelineRunner.run``). Without it a job that arrives a moment
after a batch started waits for the whole batch.

Who may join: only jobs of the batch's shape (``ShapeKey``: the same model, size and frame count;
step count, guidance, seed and priority may differ; each row runs at its own step), and only while no job at least as urgent as the batch's
most urgent row waits with another key: a batch that keeps growing would keep that job from the
lane. Joining never takes a job that a free lane could start on its own: with a lane free, the
batch loop takes it.

Preemption: when that waiting job's tier is more urgent than every row of the batch, the batch makes
way (``JoinQueue.park_all``): at its next step its rows are parked whole, their jobs go back to the
front of their queues, and the lane runs the urgent job. A parked row resumes from its step when its
job runs again (``parked_store``), to the video an uninterrupted run makes.

The decision (join, stop growing, make way) is ``step_decision.next_look``, which the planner's
simulation uses too; this module adds the waiting, claiming and offering around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from reelserve.engine.joining import JoinQueue
from reelserve.engine.step_decision import NO_SHAPE, Move, StepPolicy, next_look, room_to_grow
from reelserve.jobs.base import Broker, Preempted
from reelserve.schemas import Job
from reelserve.schemas.requests import ShapeKey

# NO_SHAPE and StepPolicy live in step_decision (pure: the planner shares them); named here as before.
__all__ = ["JOIN_WAIT_S", "NO_SHAPE", "WATCH_S", "JoinFeeder", "StepPolicy"]

log = logging.getLogger(__name__)

# Longest a feeder waits for a waiting job or for room before it looks again: the batch may have
# ended, or a lane come free, meanwhile (both also wake it at once).
JOIN_WAIT_S = 0.5
# How long a full batch's feeder waits for more urgent work before it looks for room again.
WATCH_S = 0.1


class JoinFeeder:
    """Feeds one running batch's ``JoinQueue``; ``run`` ends when the batch does.

    :param claim: claims taken job ids for this batch's lane (compare-and-set in the store).
    :param hand_back: puts taken job ids back at the front of the queue, unstarted; a job
        claimed already is marked reclaimed by this worker, so the next claim takes it again.
    :param joined: called on the loop with each claimed job, before it is offered.
    :param lanes_busy: whether every lane runs a batch now.
    :param joined_rows: counts the jobs offered to the batch.
    :param level_of: a job's priority level (0 is the most urgent).
    :param running_level: the most urgent level among the batch's rows still running.
    :param grows_cheaply: whether one row more costs a batch of that many rows little (else it takes
        no less urgent joiner: ``step_decision.next_look``).
    :param owed: seconds of a reserved share the batch was opened for that are not spent yet.
    :param least_urgent: the job of its least urgent running row (None: none to swap out).
    """

    def __init__(
        self, *, broker: Broker, joins: JoinQueue, shape: ShapeKey, level: int,
        claim: Callable[[list[str]], Awaitable[list[Job]]], hand_back: Callable[[list[str], bool], Awaitable[None]],
        joined: Callable[[Job], None], lanes_busy: Callable[[], bool], joined_rows: Counter,
        policy: StepPolicy, level_of: Callable[[Job], int], running_level: Callable[[], int] | None = None,
        grows_cheaply: Callable[[int], bool] = lambda rows: True, owed: Callable[[], float] = lambda: 0.0,
        least_urgent: Callable[[], Job | None] = lambda: None,
    ) -> None:
        self.broker, self.joins, self.shape, self.level = broker, joins, shape, level
        self.claim, self.hand_back, self.joined, self.lanes_busy = claim, hand_back, joined, lanes_busy
        self.joined_rows = joined_rows  # the metric
        self.policy, self.level_of = policy, level_of
        # The level of the batch's most urgent row still running (None: ``level``, lowered as rows
        # join): once a realtime row has left, the batch must make way for realtime work again.
        self.running_level = running_level
        self.grows_cheaply = grows_cheaply  # rows -> whether one row more costs them little (the cost model)
        self.owed = owed  # seconds the reserved share it was opened for is still owed (0: none)
        self.least_urgent = least_urgent  # the running row a more urgent joiner would replace
        self.wake = asyncio.Event()  # set when rows leave, and when the lanes' business changes

    def can_join(self) -> bool:
        """Room in the batch now (the feeder's own check before a claim)."""
        return not self.joins.closed and self.lanes_busy() and self.joins.room() > 0

    async def run(self) -> None:
        """Until the batch ends. It takes joiners while it has room, until a job at least as urgent
        waits with another shape; and (``preempt``) it makes way as soon as a job more urgent than
        all of its rows waits that it cannot take. What to look for is ``step_decision.next_look``,
        the planner's too; the broker's ``take`` answers it."""
        growing = self.policy.join
        while not self.joins.closed:
            level = self.level if self.running_level is None else self.running_level()
            room = room_to_grow(self.joins.room(), self.joins.joined, self.joins.limit)
            cheap = self.grows_cheaply(self.joins.limit - self.joins.room())
            owed, least = self.owed(), self.least_urgent()
            look = next_look(self.policy, shape=self.shape, level=level, room=room, growing=growing, cheap=cheap,
                             owed=owed > 0, least_level=None if least is None else self.level_of(least))
            if not self.lanes_busy() or look is Move.WAIT:
                # A lane is free (the batch loop takes the work), or full: until a row leaves; or owed:
                # until the share is spent, when it may make way.
                await self._nap(min(JOIN_WAIT_S, owed) if owed > 0 else JOIN_WAIT_S)
                continue
            if isinstance(look, Move):  # Move.DONE: nothing can change this batch any more
                return
            try:
                taken = await self.broker.take(
                    look.wanted, timeout=JOIN_WAIT_S if look.joins and not look.swap else WATCH_S,
                    preempt_below=look.preempt_below, urgent_first=look.joins, up_to=look.up_to,
                )
            except Preempted:
                if look.on_urgent is Move.MAKE_WAY:
                    self.joins.park_all()
                    return
                growing = False  # STOP_GROWING: a growing batch would keep that job waiting
                continue
            if taken is not None:
                await (self._swap(taken[0], least) if look.swap and least is not None else self._join(taken[0]))

    async def _nap(self, seconds: float = JOIN_WAIT_S) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _join(self, job_id: str) -> None:
        if not self.can_join():  # the batch ended or a lane came free while the take waited
            await self.hand_back([job_id], False)
            return
        for job in await self.claim([job_id]):
            self.joined(job)
            if self.joins.offer([(job.id, job.params)]):
                self.joined_rows.inc()
                self.level = min(self.level, self.level_of(job))  # the batch's most urgent row
            else:  # the batch ended while it was claimed
                log.info("%s was claimed to join a batch that ended meanwhile; it goes back to the queue", job.id)
                await self.hand_back([job.id], True)

    async def _swap(self, job_id: str, leaving: Job) -> None:
        """Preemption of one row: ``job_id`` (more urgent, of the batch's shape) takes the slot of the
        running row ``leaving``, which is parked at the next boundary and goes back to the queue."""
        if self.joins.closed or not self.lanes_busy():
            await self.hand_back([job_id], False)
            return
        for job in await self.claim([job_id]):
            self.joined(job)
            if self.joins.swap(leaving.id, (job.id, job.params)):
                self.joined_rows.inc()
            else:  # the batch ended, makes way, or a row is about to join: the job waits its turn
                await self.hand_back([job.id], True)
