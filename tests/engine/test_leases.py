"""The lease keeper stops when cancelled even when the broker's client swallows the cancel, as
redis-py does when a cancel lands inside its own timeout (it raises a ConnectionError instead)."""

from __future__ import annotations

import asyncio

from reelserve.engine.leases import LeaseKeeper


class SwallowingBroker:
    """``heartbeat`` waits forever; cancelled, it raises ConnectionError, as redis-py can."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.rounds = 0

    async def heartbeat(self, job_ids: list[str]) -> list[str]:
        self.rounds += 1
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None
        return []

    async def reclaim(self) -> tuple[list[str], list[str]]:
        return [], []


async def test_a_cancel_the_client_turned_into_an_error_still_stops_the_keeper() -> None:
    broker = SwallowingBroker()
    keeper = LeaseKeeper(broker, 0.01, lambda: ["job"], lambda _: None, lambda _: None, lambda _: None)  # type: ignore[arg-type]
    task = asyncio.create_task(keeper.run())
    await broker.entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    assert broker.rounds == 1  # it did not go round again after the swallowed cancel


async def test_an_error_without_a_cancel_is_retried() -> None:
    class FailingOnce(SwallowingBroker):
        async def heartbeat(self, job_ids: list[str]) -> list[str]:
            self.rounds += 1
            if self.rounds == 1:
                raise ConnectionError("Redis away")
            self.entered.set()
            return []

    broker = FailingOnce()
    keeper = LeaseKeeper(broker, 0.01, lambda: [], lambda _: None, lambda _: None, lambda _: None)  # type: ignore[arg-type]
    task = asyncio.create_task(keeper.run())
    await asyncio.wait_for(broker.entered.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert broker.rounds >= 2
