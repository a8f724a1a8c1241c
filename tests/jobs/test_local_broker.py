import asyncio
import time

from reelserve.engine.batcher import Batcher
from reelserve.jobs.local_broker import LocalBroker


async def test_take_is_fifo_and_keyed() -> None:
    broker = LocalBroker()
    for job_id, key in [("a", "k1"), ("b", "k2"), ("c", "k1")]:
        await broker.put(job_id, key)
    assert broker.position("c") == 2
    assert await broker.take("k2") == ("b", "k2")
    assert broker.position("c") == 1
    assert await broker.take() == ("a", "k1")
    assert await broker.take("k2", timeout=0) is None
    assert broker.depth() == 1


async def test_take_waits_for_a_put() -> None:
    broker = LocalBroker()
    waiter = asyncio.create_task(broker.take("k"))
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done  # nothing with key "k" yet: it is blocked, not returning None
    await broker.put("x", "other")
    await broker.put("y", "k")
    assert await asyncio.wait_for(waiter, 5) == ("y", "k")


async def test_take_times_out() -> None:
    broker = LocalBroker()
    started = time.monotonic()
    assert await broker.take(timeout=0.05) is None
    assert time.monotonic() - started >= 0.05


async def test_discard_and_position() -> None:
    broker = LocalBroker()
    await broker.put("a", "k")
    await broker.put("b", "k")
    assert broker.discard("a")
    assert not broker.discard("a")
    assert broker.position("a") is None
    assert broker.position("b") == 0


async def test_batcher_groups_by_key_up_to_size() -> None:
    broker = LocalBroker()
    for i in range(5):
        await broker.put(f"k1-{i}", "k1")
        await broker.put(f"k2-{i}", "k2")
    batcher = Batcher(broker, max_batch_size=3, max_wait_s=0)
    assert await batcher.collect() == ["k1-0", "k1-1", "k1-2"]
    assert await batcher.collect() == ["k2-0", "k2-1", "k2-2"]
    assert await batcher.collect() == ["k1-3", "k1-4"]


async def test_batcher_waits_for_latecomers_within_max_wait() -> None:
    broker = LocalBroker()
    await broker.put("a", "k")
    batcher = Batcher(broker, max_batch_size=4, max_wait_s=5)

    async def late() -> None:
        await broker.put("b", "k")
        await broker.put("c", "other")
        await broker.put("d", "k")
        await broker.put("e", "k")

    collecting = asyncio.create_task(batcher.collect())
    await late()
    assert await asyncio.wait_for(collecting, 5) == ["a", "b", "d", "e"]
    assert broker.position("c") == 0
