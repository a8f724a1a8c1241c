import asyncio
import time

import pytest

from reelserve.engine.batcher import Batcher
from reelserve.jobs.base import Preempted
from reelserve.jobs.local_broker import LocalBroker
from reelserve.schemas.requests import ShapeKey


async def test_take_is_fifo_and_keyed() -> None:
    broker = LocalBroker()
    for job_id, key in [("a", "k1"), ("b", "k2"), ("c", "k1")]:
        await broker.put(job_id, key)
    assert await broker.position("c") == 2
    assert await broker.take("k2") == ("b", "k2")
    assert await broker.position("c") == 1
    assert await broker.take() == ("a", "k1")
    assert await broker.take("k2", timeout=0) is None
    assert await broker.depth() == 1


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
    assert await broker.discard("a")
    assert not await broker.discard("a")
    assert await broker.position("a") is None
    assert await broker.position("b") == 0


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
    assert await broker.position("c") == 0


async def test_more_urgent_levels_are_taken_first_and_fifo_within_a_level() -> None:
    broker = LocalBroker()
    await broker.put("s1", "k", level=1)
    await broker.put("b1", "k", level=2)
    await broker.put("r1", "k", level=0)
    await broker.put("s2", "k", level=1)
    await broker.put("r2", "k", level=0)
    assert await broker.position("s1") == 2 and await broker.position("b1") == 4
    assert await broker.depth_by_level() == {0: 2, 1: 2, 2: 1}
    assert [(await broker.take())[0] for _ in range(5)] == ["r1", "r2", "s1", "s2", "b1"]  # type: ignore[index]


async def test_take_of_a_level_serves_that_level_when_it_has_work() -> None:
    broker = LocalBroker()
    await broker.put("r1", "k", level=0)
    await broker.put("b1", "k", level=2)
    assert await broker.take(level=2) == ("b1", "k")
    assert await broker.take(level=2) == ("r1", "k")  # nothing left at 2: the most urgent instead


async def test_joiners_of_a_batch_for_a_level_come_from_that_level_first() -> None:
    broker = LocalBroker()
    for job_id, key, level in [("r1", "k", 0), ("s1", "other", 1), ("s2", "k", 1), ("r2", "k", 0)]:
        await broker.put(job_id, key, level=level)
    assert await broker.take("k", timeout=0, level=1) == ("s2", "k")  # s1 has another key
    assert await broker.take("k", timeout=0, level=1) == ("r1", "k")  # no "k" left at 1: most urgent next


async def test_requeue_restores_the_front_in_order() -> None:
    broker = LocalBroker()
    for job_id in ("a", "b", "c"):
        await broker.put(job_id, "k", level=1)
    taken = [(await broker.take())[0], (await broker.take())[0]]  # type: ignore[index]
    await broker.put("d", "k", level=1)
    await broker.requeue(taken, "k", {"a": 1, "b": 1})
    assert [(await broker.take())[0] for _ in range(4)] == ["a", "b", "c", "d"]  # type: ignore[index]


async def test_an_urgent_job_preempts_a_batch_that_has_not_started() -> None:
    broker = LocalBroker()
    levels = {"s1": 1, "s2": 1, "r1": 0}
    await broker.put("s1", "slow", level=1)
    batcher = Batcher(broker, max_batch_size=4, max_wait_s=0.5, level_of=lambda job_id: levels[job_id])
    collecting = asyncio.create_task(batcher.collect())
    while await broker.depth():  # until it has taken s1 and is waiting for joiners
        await asyncio.sleep(0)
    await broker.put("r1", "fast", level=0)  # arrives while the standard batch waits for joiners
    assert await asyncio.wait_for(collecting, 5) == ["r1"]  # without preemption: ["s1"], r1 behind it
    await broker.put("s2", "slow", level=1)
    assert await Batcher(broker, 4, 0, level_of=lambda job_id: levels[job_id]).collect() == ["s1", "s2"]


async def test_urgent_jobs_with_the_same_key_join_instead_of_preempting() -> None:
    broker = LocalBroker()
    levels = {"s1": 1, "r1": 0}
    await broker.put("s1", "k", level=1)
    await broker.put("r1", "k", level=0)
    batcher = Batcher(broker, max_batch_size=2, max_wait_s=5, level_of=lambda job_id: levels[job_id])
    assert await asyncio.wait_for(batcher.collect(), 5) == ["r1", "s1"]


async def test_a_learned_batch_limit_caps_that_key_only() -> None:
    broker = LocalBroker()
    for i in range(4):
        await broker.put(f"a{i}", "a")
        await broker.put(f"b{i}", "b")
    batcher = Batcher(broker, max_batch_size=4, max_wait_s=0)
    batcher.lower_limit("a", 2)
    assert await batcher.collect() == ["a0", "a1"]
    assert await batcher.collect() == ["b0", "b1", "b2", "b3"]
    assert batcher.limit_for("a") == 2 and batcher.limit_for("b") == 4


async def test_urgent_first_stops_a_growing_batch_before_it_takes_a_joiner() -> None:
    broker = LocalBroker()
    await broker.put("mine", "w=32|steps=9", level=1)
    await broker.put("urgent", "w=48|steps=2", level=0)
    with pytest.raises(Preempted):  # the joiner waits too, but the urgent job goes first
        await broker.take(ShapeKey("w=32"), timeout=0, preempt_below=2, urgent_first=True)
    # Without it, the old answer: the joiner is handed out (the batcher's fill window takes it so).
    assert await broker.take(ShapeKey("w=32"), timeout=0, preempt_below=2) == ("mine", "w=32|steps=9")


async def test_up_to_takes_only_a_job_at_least_that_urgent() -> None:
    broker = LocalBroker()
    await broker.put("batch-tier", "w=32|steps=9", level=2)
    assert await broker.take(ShapeKey("w=32"), timeout=0, up_to=1) is None
    await broker.put("realtime", "w=32|steps=2", level=0)
    assert await broker.take(ShapeKey("w=32"), timeout=0, up_to=1) == ("realtime", "w=32|steps=2")
