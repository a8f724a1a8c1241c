"""Continuous batching, the loop's side: while every lane is busy, a running batch takes the waiting
jobs of its own batch key as it has room, and they join it at its next step boundary (the lane's
side is ``joining.JoinQueue`` and ``PipelineRunner.run``). Without it a job that arrives a moment
after a batch started waits for the whole batch.

Who may join: only jobs of the batch's shape (``ShapeKey``: the same model, size and frame count;
step count, guidance, seed and priority may differ; each row runs at its own step), and only while no job at least as urgent as the batch's
most urgent row waits with another key: a batch that keeps growing would keep that job from the
lane. Joining never takes a job that a free lane could start on its own: with a lane free, the
batch loop takes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from reelserve.engine.joining import JoinQueue
from reelserve.jobs.base import Broker, Preempted
from reelserve.schemas import Job
from reelserve.schemas.requests import ShapeKey

log = logging.getLogger(__name__)

# Longest a feeder waits for a waiting job or for room before it looks again: the batch may have
# ended, or a lane come free, meanwhile (both also wake it at once).
JOIN_WAIT_S = 0.5


class JoinFeeder:
    """Feeds one running batch's ``JoinQueue``; ``run`` ends when the batch does.

    :param claim: claims taken job ids for this batch's lane (compare-and-set in the store).
    :param hand_back: puts taken job ids back at the front of the queue, unstarted; a job
        claimed already is marked reclaimed by this worker, so the next claim takes it again.
    :param joined: called on the loop with each claimed job, before it is offered.
    :param lanes_busy: whether every lane runs a batch now.
    :param joined_rows: counts the jobs offered to the batch.
    """

    def __init__(
        self, *, broker: Broker, joins: JoinQueue, shape: ShapeKey, level: int,
        claim: Callable[[list[str]], Awaitable[list[Job]]], hand_back: Callable[[list[str], bool], Awaitable[None]],
        joined: Callable[[Job], None], lanes_busy: Callable[[], bool], joined_rows: Counter,
    ) -> None:
        self.broker, self.joins, self.shape, self.level = broker, joins, shape, level
        self.claim, self.hand_back, self.joined, self.lanes_busy = claim, hand_back, joined, lanes_busy
        self.joined_rows = joined_rows  # the metric
        self.wake = asyncio.Event()  # set when rows leave, and when the lanes' business changes

    def can_join(self) -> bool:
        return not self.joins.closed and self.joins.room() > 0 and self.lanes_busy()

    async def run(self) -> None:
        """Until the batch ends, or a more urgent job of another key waits (then the batch runs out
        and the lane goes to it)."""
        while not self.joins.closed:
            if not self.can_join():
                await self._nap()
                continue
            try:
                taken = await self.broker.take(self.shape, timeout=JOIN_WAIT_S, preempt_below=self.level + 1)
            except Preempted:
                return
            if taken is not None:
                await self._join(taken[0])

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
            else:  # the batch ended while it was claimed
                log.info("%s was claimed to join a batch that ended meanwhile; it goes back to the queue", job.id)
                await self.hand_back([job.id], True)
