"""Dynamic batching: the oldest job opens a batch; jobs with the same batch key may join until
the batch is full or ``max_wait_s`` has passed since it opened."""

from __future__ import annotations

import time

from reelserve.jobs.base import Broker


class Batcher:
    def __init__(self, broker: Broker, max_batch_size: int, max_wait_s: float) -> None:
        self._broker = broker
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s

    async def collect(self) -> list[str]:
        """Wait for a job, then return up to ``max_batch_size`` job ids sharing its batch key."""
        opened = await self._broker.take()
        assert opened is not None  # take() without a timeout waits until a job arrives
        first_id, batch_key = opened
        batch = [first_id]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            # Compatible jobs already queued join even when the wait is over.
            taken = await self._broker.take(batch_key, timeout=max(deadline - time.monotonic(), 0.0))
            if taken is None:
                break
            batch.append(taken[0])
        return batch
