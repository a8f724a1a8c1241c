"""Dynamic batching with priorities: the oldest job of the most urgent level opens a batch (or of a
level owed its reserved share); jobs with the same batch key join, most urgent first (the owed
level's first), until the batch is full or its fill window has passed since it opened: a fixed
``max_wait_s``, or what ``window`` says for the batch key.

A batch that has not started never holds up more urgent work: if a job of a more urgent level
with another key arrives while the batch waits for joiners, the batch goes back to the queue,
in order, and the urgent job opens the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from reelserve.engine.shares import ReservedShares
from reelserve.jobs.base import Broker, Preempted


class Batcher:
    """
    :param level_of: the priority level of a queued job (0 is the most urgent).
    :param shares: reserved shares per level; None: strict priority.
    """

    def __init__(
        self,
        broker: Broker,
        max_batch_size: int,
        max_wait_s: float,
        level_of: Callable[[str], int] = lambda _: 0,
        shares: ReservedShares | None = None,
        window: Callable[[str], float] | None = None,
    ) -> None:
        self._broker = broker
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._window = window
        self._level_of = level_of
        self._shares = shares
        self._key_limits: dict[str, int] = {}  # batch key -> most rows that fit, learned from OOMs
        self.opened_for: int | None = None  # the level the last batch was opened for (its reserved share)
        self.queued_by_level: dict[int, int] = {}  # the queue as the last batch opened
        self.batch_key = ""  # the last batch's

    def limit_for(self, batch_key: str) -> int:
        return min(self.max_batch_size, self._key_limits.get(batch_key, self.max_batch_size))

    def lower_limit(self, batch_key: str, fits: int) -> None:
        """Never again put more than ``fits`` rows of ``batch_key`` in one call (an OOM said so)."""
        self._key_limits[batch_key] = max(1, min(fits, self.limit_for(batch_key)))

    async def collect(self) -> list[str]:
        """Wait for a job, then return up to the key's limit of job ids sharing its batch key."""
        while True:
            self.queued_by_level = await self._broker.depth_by_level()
            owed = self._shares.owed_level(self.queued_by_level) if self._shares else None
            opened = await self._broker.take(level=owed)
            assert opened is not None  # take() without a timeout waits until a job arrives
            first_id, batch_key = opened
            batch = [first_id]
            # A batch opened for a reserved share is owed its turn: more urgent work may not preempt it.
            most_urgent = None if owed is not None else self._level_of(first_id)
            deadline = time.monotonic() + (self._window(batch_key) if self._window else self.max_wait_s)
            try:
                while len(batch) < self.limit_for(batch_key):
                    # Compatible jobs already queued join even when the wait is over.
                    taken = await self._broker.take(
                        batch_key,
                        timeout=max(deadline - time.monotonic(), 0.0),
                        level=owed,  # a batch opened for a share fills with that level's jobs first
                        preempt_below=most_urgent,
                    )
                    if taken is None:
                        break
                    batch.append(taken[0])
                    if most_urgent is not None:
                        most_urgent = min(most_urgent, self._level_of(taken[0]))
            except Preempted:
                await self._broker.requeue(batch, batch_key, {job_id: self._level_of(job_id) for job_id in batch})
                continue
            except BaseException:  # shutting down, or the queue failed, while gathering: nothing taken may be lost
                await asyncio.shield(
                    self._broker.requeue(batch, batch_key, {job_id: self._level_of(job_id) for job_id in batch})
                )
                raise
            self.opened_for, self.batch_key = owed, batch_key
            return batch
