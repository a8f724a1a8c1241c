"""A worker's side of a shared queue's leases: while a batch runs, keep the claim on its jobs; every
round, take over the jobs of workers that stopped keeping theirs (presumed dead)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from reelserve.cancellation import reraise_if_cancelled
from reelserve.jobs.base import Broker

log = logging.getLogger(__name__)


class LeaseKeeper:
    """
    :param interval_s: seconds between rounds; a third of the broker's claim idle time leaves two
        rounds of slack before another worker may take a running job over.
    :param running: the ids of the jobs running here now.
    :param lost: called with jobs another worker took over (this one stalled past the idle time).
    :param reclaimed: called with jobs taken over here; they may have been in progress elsewhere.
    :param given_up: called with each job delivered too often; it must be failed (``worker_lost``).
    """

    def __init__(
        self,
        broker: Broker,
        interval_s: float,
        running: Callable[[], list[str]],
        lost: Callable[[list[str]], None],
        reclaimed: Callable[[list[str]], None],
        given_up: Callable[[str], Awaitable[None]],
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive; got {interval_s}")
        self.broker = broker
        self.interval_s = interval_s
        self._running, self._lost, self._reclaimed, self._given_up = running, lost, reclaimed, given_up

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again; nothing is dropped here
                reraise_if_cancelled()
                log.warning("keeping leases failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, self.interval_s)
            await asyncio.sleep(self.interval_s)  # a timer, not a wait for anything

    async def round(self) -> None:
        lost = await self.broker.heartbeat(self._running())
        if lost:
            log.warning("jobs %s were taken over by another worker; dropping them here", lost)
            self._lost(lost)
        reclaimed, given_up = await self.broker.reclaim()
        if reclaimed:
            log.warning("took over %d jobs of a worker presumed dead: %s", len(reclaimed), reclaimed)
            self._reclaimed(reclaimed)
        for job_id in given_up:
            await self._given_up(job_id)
