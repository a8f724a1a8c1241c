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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

from reelserve.engine.joining import JoinQueue
from reelserve.jobs.base import Broker, Preempted
from reelserve.schemas import Job
from reelserve.schemas.requests import ShapeKey

log = logging.getLogger(__name__)

# Longest a feeder waits for a waiting job or for room before it looks again: the batch may have
# ended, or a lane come free, meanwhile (both also wake it at once).
JOIN_WAIT_S = 0.5
# How long a full batch's feeder waits for more urgent work before it looks for room again.
WATCH_S = 0.1
# Matches no batch key: a take with it waits for a more urgent job (``Preempted``) and takes nothing.
NO_SHAPE = ShapeKey("\0")


@dataclass(frozen=True)
class StepPolicy:
    """What may change a running batch between two steps (the settings ``continuous_batching``,
    ``preemption`` and ``parked_rows_mb``)."""

    join: bool = True  # waiting jobs of its shape join it
    preempt: bool = True  # it makes way, parked, for a more urgent job of another shape
    parked_limit_bytes: int = 512 * 2**20  # parked rows kept in memory, at most
    # What a row parked to storage is tied to (the model version and the settings that change its
    # floats); None: a draining worker does not park its rows, it lets them finish.
    resume_version: str | None = None
    # Every this many steps a running row's state is written to storage (needs ``resume_version``),
    # so a worker killed mid-run leaves it for the next run to resume; 0: never.
    checkpoint_steps: int = 0


class JoinFeeder:
    """Feeds one running batch's ``JoinQueue``; ``run`` ends when the batch does.

    :param claim: claims taken job ids for this batch's lane (compare-and-set in the store).
    :param hand_back: puts taken job ids back at the front of the queue, unstarted; a job
        claimed already is marked reclaimed by this worker, so the next claim takes it again.
    :param joined: called on the loop with each claimed job, before it is offered.
    :param lanes_busy: whether every lane runs a batch now.
    :param joined_rows: counts the jobs offered to the batch.
    :param level_of: a job's priority level (0 is the most urgent).
    """

    def __init__(
        self, *, broker: Broker, joins: JoinQueue, shape: ShapeKey, level: int,
        claim: Callable[[list[str]], Awaitable[list[Job]]], hand_back: Callable[[list[str], bool], Awaitable[None]],
        joined: Callable[[Job], None], lanes_busy: Callable[[], bool], joined_rows: Counter,
        policy: StepPolicy, level_of: Callable[[Job], int],
    ) -> None:
        self.broker, self.joins, self.shape, self.level = broker, joins, shape, level
        self.claim, self.hand_back, self.joined, self.lanes_busy = claim, hand_back, joined, lanes_busy
        self.joined_rows = joined_rows  # the metric
        self.policy, self.level_of = policy, level_of
        self.wake = asyncio.Event()  # set when rows leave, and when the lanes' business changes

    def can_join(self) -> bool:
        """Room in the batch now (the feeder's own check before a claim)."""
        return not self.joins.closed and self.lanes_busy() and self.joins.room() > 0

    async def run(self) -> None:
        """Until the batch ends. It takes joiners while it has room, until a job at least as urgent
        waits with another shape; and (``preempt``) it makes way as soon as a job more urgent than
        all of its rows waits that it cannot take."""
        growing = self.policy.join
        while not self.joins.closed:
            if not self.lanes_busy():
                await self._nap()
            elif growing and self.joins.room() > 0:
                try:
                    taken = await self.broker.take(self.shape, timeout=JOIN_WAIT_S, preempt_below=self.level + 1)
                except Preempted:  # another shape, at least as urgent: a growing batch would keep it waiting
                    growing = False
                    continue
                if taken is not None:
                    await self._join(taken[0])
            elif self.policy.preempt:  # full, or done growing: watch for more urgent work
                try:
                    await self.broker.take(NO_SHAPE, timeout=WATCH_S, preempt_below=self.level)
                except Preempted:
                    self.joins.park_all()
                    return
            elif growing:
                await self._nap()  # full: until a row leaves
            else:
                return

    async def _nap(self) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), JOIN_WAIT_S)
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
