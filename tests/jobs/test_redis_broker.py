"""RedisStreamsBroker on a real private redis-server: LocalBroker's queue semantics across processes
(an API-side broker puts, worker-side brokers take), plus what only the distributed broker has:
acknowledgement, heartbeats, reclaiming a dead worker's jobs, dead letters, release on shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from support import RedisServer, eventually

from reelserve.engine.batcher import Batcher
from reelserve.jobs.base import Preempted
from reelserve.jobs.redis_broker import RedisStreamsBroker
from reelserve.redis_names import BROKER_GROUP, RedisKeys
from reelserve.schemas.requests import ShapeKey

MODEL = "tiny"
KEYS = RedisKeys()
IDLE_MS = 50  # claim_idle_ms of the brokers that reclaim: a "dead" worker's jobs are up for grabs fast


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
async def client(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis(port=redis_server.port, socket_connect_timeout=2, socket_timeout=10,
                       decode_responses=request.param)
    yield c
    await c.aclose()


def broker(client: aioredis.Redis, consumer: str, **options: object) -> RedisStreamsBroker:
    return RedisStreamsBroker(client, MODEL, consumer, **options)  # type: ignore[arg-type]


async def take_ids(worker: RedisStreamsBroker, n: int) -> list[str]:
    return [(await asyncio.wait_for(worker.take(), 5))[0] for _ in range(n)]  # type: ignore[index]


def idle_count(peek: redis.Redis, level: int) -> int:
    """Entries of ``level`` delivered and untouched for longer than IDLE_MS."""
    return len(peek.xpending_range(KEYS.stream(MODEL, level), BROKER_GROUP, "-", "+", 100, idle=IDLE_MS + 1))


async def idle_entries(peek: redis.Redis, level: int, count: int) -> None:
    await eventually(lambda: idle_count(peek, level) >= count, timeout=10)


def assert_empty(peek: redis.Redis, level: int) -> None:
    stream = KEYS.stream(MODEL, level)
    assert peek.xpending(stream, BROKER_GROUP)["pending"] == 0
    assert peek.xlen(stream) == 0
    assert peek.hlen(KEYS.broker_entries(MODEL)) == 0


async def test_fifo_within_a_level_most_urgent_first_across_brokers(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    for job_id, level in [("s1", 1), ("b1", 2), ("r1", 0), ("s2", 1), ("r2", 0)]:
        await api.put(job_id, "k", level=level)
    assert await take_ids(worker, 5) == ["r1", "r2", "s1", "s2", "b1"]
    assert await worker.take(timeout=0) is None


async def test_take_waits_for_a_put_and_times_out(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    started = time.monotonic()
    assert await worker.take(timeout=0.1) is None
    assert 0.1 <= time.monotonic() - started < 5
    waiter = asyncio.create_task(worker.take("k"))  # no timeout: waits until a "k" job comes
    await api.put("x", "other")
    await api.put("y", "k")
    assert await asyncio.wait_for(waiter, 5) == ("y", "k")
    assert await worker.take(timeout=0) == ("x", "other")


async def test_take_by_key_and_by_level(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    jobs = [("r1", "k", 0), ("s1", "other", 1), ("s2", "k", 1), ("b1", "k", 2), ("r2", "k", 0)]
    for job_id, key, level in jobs:
        await api.put(job_id, key, level=level)
    assert await worker.take(level=2, timeout=0) == ("b1", "k")
    assert await worker.take("k", timeout=0, level=1) == ("s2", "k")  # s1 has another key
    assert await worker.take("k", timeout=0, level=1) == ("r1", "k")  # no "k" left at 1: most urgent next
    assert await worker.take("k", timeout=0) == ("r2", "k")
    assert await worker.take("k", timeout=0) is None  # only s1 ("other") is left
    assert await worker.take(timeout=0) == ("s1", "other")


async def test_take_by_shape_takes_any_batch_key_of_that_shape(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    await api.put("other", "w=48|steps=2", level=1)
    await api.put("s1", "w=32|steps=9", level=1)
    await api.put("s2", "w=32|steps=2", level=1)
    assert await worker.take(ShapeKey("w=32"), timeout=0) == ("s1", "w=32|steps=9")
    assert await worker.take(ShapeKey("w=32"), timeout=0) == ("s2", "w=32|steps=2")
    await api.put("urgent", "w=48|steps=2", level=0)
    with pytest.raises(Preempted):  # another shape, more urgent: a running batch stops growing
        await asyncio.wait_for(worker.take(ShapeKey("w=32"), timeout=5, preempt_below=1), 5)


async def test_read_ahead_stops_at_read_count_per_level(client: aioredis.Redis) -> None:
    api, w1, w2 = broker(client, "api"), broker(client, "w1", read_count=1), broker(client, "w2")
    await api.put("a", "k1")
    await api.put("b", "k2")
    assert await w1.take("k2", timeout=0.05) is None  # its buffer (a) is full: b is left for others
    assert await api.position("b") == 0
    assert await w2.take("k2", timeout=0) == ("b", "k2")
    assert await w1.take(timeout=0) == ("a", "k1")


async def test_a_more_urgent_job_with_another_key_preempts(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    await api.put("s1", "slow", level=1)
    assert await worker.take(timeout=1) == ("s1", "slow")
    await api.put("r1", "fast", level=0)
    with pytest.raises(Preempted):
        await asyncio.wait_for(worker.take("slow", timeout=5, preempt_below=1), 5)
    await api.put("r2", "slow", level=0)  # same key: it joins instead of preempting
    assert await worker.take("slow", timeout=0, preempt_below=1) == ("r2", "slow")


async def test_the_batcher_is_preempted_by_an_urgent_job(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    levels = {"s1": 1, "s2": 1, "r1": 0}
    await api.put("s1", "slow", level=1)
    batcher = Batcher(worker, max_batch_size=4, max_wait_s=0.5, level_of=levels.__getitem__)  # type: ignore[arg-type]
    collecting = asyncio.create_task(batcher.collect())

    async def s1_delivered() -> bool:
        return await api.depth() == 0

    await eventually(s1_delivered, timeout=5)  # so the batcher has s1 and waits for joiners
    await api.put("r1", "fast", level=0)
    assert await asyncio.wait_for(collecting, 5) == ["r1"]
    await api.put("s2", "slow", level=1)
    again = Batcher(worker, 4, 0, level_of=levels.__getitem__)  # type: ignore[arg-type]
    assert await asyncio.wait_for(again.collect(), 5) == ["s1", "s2"]


async def test_requeue_restores_the_front_of_the_buffer_in_order(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    for job_id in ("a", "b", "c"):
        await api.put(job_id, "k", level=1)
    taken = await take_ids(worker, 2)
    await api.put("d", "k", level=1)
    await worker.requeue(taken, "k", {"a": 1, "b": 1})
    assert await take_ids(worker, 4) == ["a", "b", "c", "d"]


async def test_discard_of_queued_and_of_delivered_jobs(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    for job_id in ("a", "b", "c"):
        await api.put(job_id, "k")
    assert await api.discard("a")
    assert not await api.discard("a")
    assert not await api.discard("unknown")
    assert await worker.take(timeout=1) == ("b", "k")  # a is never delivered
    assert not await api.discard("b")  # taken
    assert not await api.discard("c")  # read ahead into the worker's buffer: delivered too
    assert await worker.take(timeout=0) == ("c", "k")
    assert await worker.take(timeout=0) is None


async def test_depth_and_position_count_undelivered_jobs(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", read_count=2)
    for job_id, level in [("r1", 0), ("r2", 0), ("r3", 0), ("b1", 2), ("b2", 2)]:
        await api.put(job_id, "k", level=level)
    await api.put("r1", "k", level=0)  # already queued: no second entry
    assert await api.depth_by_level() == {0: 3, 2: 2}
    assert await api.depth() == 5
    assert [await api.position(j) for j in ("r1", "r2", "r3", "b1", "b2")] == [0, 1, 2, 3, 4]
    assert await worker.take() == ("r1", "k")  # reads r1 and r2 (read_count=2)
    assert await api.depth_by_level() == {0: 1, 2: 2}
    assert [await api.position(j) for j in ("r1", "r2", "r3", "b1", "b2")] == [None, None, 0, 1, 2]
    assert await api.discard("b1")  # a deleted undelivered entry: where XINFO's lag gives up
    assert await api.depth_by_level() == {0: 1, 2: 1}
    assert await api.position("b2") == 1
    assert await api.position("unknown") is None
    with pytest.raises(ValueError):
        await api.put("x", "k", level=7)


async def test_ack_removes_the_entry(client: aioredis.Redis, peek: redis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    await api.put("a", "k", level=1)
    assert await worker.take(timeout=1) == ("a", "k")
    assert await worker.ack("a")
    assert_empty(peek, level=1)
    assert not await worker.ack("a")


async def test_a_dead_workers_jobs_are_reclaimed_in_order_and_a_late_ack_ends_them(
    client: aioredis.Redis, peek: redis.Redis
) -> None:
    api, a = broker(client, "api"), broker(client, "A")
    for job_id, key in [("j1", "k1"), ("j2", "k2"), ("j3", "k1")]:
        await api.put(job_id, key)
    assert await take_ids(a, 2) == ["j1", "j2"]  # j3 is in A's buffer; A now stops answering
    b = broker(client, "B", claim_idle_ms=IDLE_MS)
    await idle_entries(peek, level=0, count=3)
    assert await b.reclaim() == (["j1", "j2", "j3"], [])
    assert await b.take(timeout=0) == ("j1", "k1")
    # A comes back and acks late: j1 (B is running it) and j2 (still in B's buffer) are done.
    assert await a.ack("j1") and await a.ack("j2")
    assert await b.take(timeout=0) == ("j3", "k1")  # j2 is skipped: its entry is gone
    assert not await b.ack("j1")  # nothing left to ack; nothing breaks
    assert await b.heartbeat(["j1", "j3"]) == ["j1"]  # B learns it no longer holds j1
    assert await b.ack("j3")
    assert_empty(peek, level=0)


async def test_a_heartbeat_keeps_a_running_job_from_being_reclaimed(
    client: aioredis.Redis, peek: redis.Redis
) -> None:
    api, a, b = broker(client, "api"), broker(client, "A"), broker(client, "B", claim_idle_ms=IDLE_MS)
    await api.put("j1", "k")
    await api.put("j2", "k")
    assert await take_ids(a, 2) == ["j1", "j2"]

    async def j2_idle_past_the_timeout() -> bool:
        assert await a.heartbeat(["j1"]) == []  # j1 is touched all along, j2 never
        return idle_count(peek, level=0) == 1

    await eventually(j2_idle_past_the_timeout, timeout=10)
    assert await a.heartbeat(["j1"]) == []
    assert await b.reclaim() == (["j2"], [])
    assert await a.heartbeat(["j1", "j2"]) == ["j2"]
    assert await b.take(timeout=0) == ("j2", "k")


async def test_a_job_delivered_too_often_is_dead_lettered(client: aioredis.Redis, peek: redis.Redis) -> None:
    api = broker(client, "api")
    w1, w2, w3 = (broker(client, w, claim_idle_ms=IDLE_MS, max_deliveries=2) for w in ("W1", "W2", "W3"))
    await api.put("j", "k", level=1)
    assert await w1.take(timeout=1) == ("j", "k")  # delivery 1; W1 dies
    await idle_entries(peek, level=1, count=1)
    assert await w2.reclaim() == (["j"], [])  # delivery 2; W2 dies before running it
    await idle_entries(peek, level=1, count=1)
    assert await w3.reclaim() == ([], ["j"])  # a third delivery would exceed max_deliveries
    dead = peek.xrange(KEYS.dead_letters(MODEL))
    assert [fields for _, fields in dead] == [
        {"job_id": "j", "batch_key": "k", "level": "1", "deliveries": "3", "reason": "worker_lost"}
    ]
    assert_empty(peek, level=1)
    assert await w2.take(timeout=0) is None and await w3.take(timeout=0) is None


async def test_release_hands_buffered_jobs_to_another_worker(client: aioredis.Redis) -> None:
    api, a, b = broker(client, "api"), broker(client, "A"), broker(client, "B")
    for job_id in ("a", "b", "c"):
        await api.put(job_id, "k")
    assert await a.take(timeout=1) == ("a", "k")  # b and c wait in A's buffer
    await api.put("d", "k")
    await a.requeue(["a"], "k", {"a": 0})  # taken, not started: give it back too
    assert await a.release() == 3
    assert await api.depth() == 4
    # At once (no idle timeout), but behind d: released jobs are new entries at the end of the level.
    assert [await b.take(timeout=0) for _ in range(4)] == [("d", "k"), ("a", "k"), ("b", "k"), ("c", "k")]


async def test_other_namespaces_and_models_see_nothing(client: aioredis.Redis) -> None:
    api = broker(client, "api")
    await api.put("a", "k")
    big = RedisStreamsBroker(client, "big", "w", claim_idle_ms=1)
    await big.put("b", "k")  # likely the same entry id as a's, in another stream
    others = [RedisStreamsBroker(client, MODEL, "w", namespace="other", claim_idle_ms=1), big]
    for other in others:
        assert not await other.discard("a")
        assert await other.position("a") is None
        assert not await other.ack("a")
    assert await others[0].depth() == 0 and await others[0].take(timeout=0) is None
    assert await big.take(timeout=0) == ("b", "k")
    assert await big.take(timeout=0) is None
    assert await big.reclaim() == ([], [])
    assert await api.position("a") == 0
    assert await broker(client, "w1").take(timeout=0) == ("a", "k")


async def test_a_worker_recreates_the_group_when_redis_lost_it(
    client: aioredis.Redis, redis_server: RedisServer
) -> None:
    api, worker = broker(client, "api"), broker(client, "w1")
    assert await worker.take(timeout=0) is None  # the worker made its groups
    redis_server.stop()
    redis_server.start()  # empty: no streams, no groups
    await api.put("a", "k", level=1)  # makes level 1's group; reading level 0 first fails with NOGROUP
    assert await worker.take(timeout=5) == ("a", "k")


def test_broker_keys_share_the_namespace_slot() -> None:
    keys = [KEYS.stream(MODEL, 0), KEYS.stream("big", 2), KEYS.dead_letters(MODEL)]
    keys.append(KEYS.broker_entries(MODEL))
    assert {key_slot(k.encode()) for k in [*keys, KEYS.jobs_by_insertion()]} == {key_slot(b"{reelserve}")}
    assert len(set(keys)) == len(keys)


def test_options_are_checked() -> None:
    client = aioredis.Redis()
    with pytest.raises(ValueError):
        RedisStreamsBroker(client, "", "w")
    with pytest.raises(ValueError):
        RedisStreamsBroker(client, MODEL, "w", levels=(0, 0))
    with pytest.raises(ValueError):
        RedisStreamsBroker(client, MODEL, "w", read_count=0)


async def test_urgent_first_stops_a_growing_batch_before_it_takes_a_joiner(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    await api.put("mine", "w=32|steps=9", level=1)
    await api.put("urgent", "w=48|steps=2", level=0)
    with pytest.raises(Preempted):  # the joiner waits too, but the urgent job goes first
        await worker.take(ShapeKey("w=32"), timeout=0, preempt_below=2, urgent_first=True)
    # Without it, the old answer: the joiner is handed out (the batcher's fill window takes it so).
    assert await worker.take(ShapeKey("w=32"), timeout=0, preempt_below=2) == ("mine", "w=32|steps=9")


async def test_up_to_takes_only_a_job_at_least_that_urgent(client: aioredis.Redis) -> None:
    api, worker = broker(client, "api"), broker(client, "w1", block_ms=20)
    await api.put("batch-tier", "w=32|steps=9", level=2)
    assert await worker.take(ShapeKey("w=32"), timeout=0, up_to=1) is None
    await api.put("realtime", "w=32|steps=2", level=0)
    assert await worker.take(ShapeKey("w=32"), timeout=0, up_to=1) == ("realtime", "w=32|steps=2")
