"""RedisEventBus on a real private redis-server: EventBus's semantics across processes (a worker-side
bus publishes, an API-side bus on another client receives), plus what only pub/sub has: waiting for
the subscription to be confirmed, unsubscribing, and surviving a Redis restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import redis
import redis.asyncio as aioredis
from support import RedisServer, eventually

from reelserve.jobs.redis_events import RedisEventBus
from reelserve.redis_names import RedisKeys
from reelserve.schemas import EventType, JobEvent, JobStatus

KEYS = RedisKeys()
WAIT_S = 10  # bound of every wait; a healthy run needs milliseconds


def event(job_id: str, step: int) -> JobEvent:
    return JobEvent(job_id=job_id, type=EventType.progress, status=JobStatus.in_progress, step=step,
                    at=1000.0 + step)  # fixed: events compare equal across processes


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
async def buses(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[
        tuple[RedisEventBus, RedisEventBus]]:
    """(api, worker): two buses on two clients, as in two processes; api listens, worker publishes."""
    clients = [aioredis.Redis(port=redis_server.port, socket_connect_timeout=2, socket_timeout=10,
                              decode_responses=request.param) for _ in range(2)]
    api, worker = (RedisEventBus(c) for c in clients)
    yield api, worker
    for bus in (api, worker):
        await bus.close()
    for c in clients:
        await c.aclose()


def subscribers(peek: redis.Redis, job_id: str) -> int:
    return dict(peek.pubsub_numsub(KEYS.events(job_id)))[KEYS.events(job_id)]

@asynccontextmanager
async def listening(bus: RedisEventBus, job_id: str) -> AsyncIterator[asyncio.Queue[JobEvent]]:
    """``bus.subscribe(job_id)``, but failing the test if the subscription is not confirmed in time."""
    async with AsyncExitStack() as stack:
        yield await asyncio.wait_for(stack.enter_async_context(bus.subscribe(job_id)), WAIT_S)


async def receive(queue: asyncio.Queue[JobEvent], n: int) -> list[JobEvent]:
    async with asyncio.timeout(WAIT_S):
        return [await queue.get() for _ in range(n)]


def test_constructor_needs_no_running_loop() -> None:
    client = aioredis.Redis(port=1)
    bus = RedisEventBus(client, namespace="other")
    assert bus.listening_jobs() == []
    assert bus.keys.events("j") == "{other}:events:j"


async def test_events_reach_a_subscriber_on_another_bus_in_order(buses: tuple[RedisEventBus, ...]) -> None:
    api, worker = buses
    async with listening(api, "j1") as queue:
        assert api.listening_jobs() == ["j1"]
        sent = [event("j1", step) for step in range(50)]
        for e in sent:
            worker.publish(e)
        await asyncio.wait_for(worker.flush(), WAIT_S)
        assert await receive(queue, 50) == sent


async def test_subscribe_returns_only_once_redis_confirmed(
        buses: tuple[RedisEventBus, ...], peek: redis.Redis) -> None:
    api, _ = buses
    for i in range(20):  # a fresh channel each time: each subscribe waits for its own confirmation
        async with listening(api, f"j{i}") as queue:
            # Published the moment subscribe returns, from another connection: only a subscription
            # Redis already holds can catch it.
            assert peek.publish(KEYS.events(f"j{i}"), event(f"j{i}", i).model_dump_json()) == 1
            assert await receive(queue, 1) == [event(f"j{i}", i)]


async def test_every_local_subscriber_gets_every_event_of_its_job_only(
        buses: tuple[RedisEventBus, ...]) -> None:
    api, worker = buses
    async with AsyncExitStack() as stack:
        # Entered together: the second joins while the first one's confirmation is still due.
        first, second = await asyncio.wait_for(asyncio.gather(
            stack.enter_async_context(api.subscribe("j1")), stack.enter_async_context(api.subscribe("j1"))),
            WAIT_S)
        third = await stack.enter_async_context(listening(api, "j1"))  # joins a confirmed subscription
        other = await stack.enter_async_context(listening(api, "j2"))
        assert sorted(api.listening_jobs()) == ["j1", "j2"]
        worker.publish(event("j3", 0))  # nobody listens to j3
        worker.publish(event("j1", 1))
        worker.publish(event("j2", 2))
        for queue in (first, second, third):
            assert await receive(queue, 1) == [event("j1", 1)]
        assert await receive(other, 1) == [event("j2", 2)]
        await asyncio.wait_for(worker.flush(), WAIT_S)
        assert all(q.empty() for q in (first, second, third, other))  # j3 (sent first) reached no one


async def test_unreadable_messages_are_skipped(buses: tuple[RedisEventBus, ...], peek: redis.Redis) -> None:
    api, worker = buses
    async with listening(api, "j1") as queue:
        peek.publish(KEYS.events("j1"), "not an event")
        worker.publish(event("j1", 1))
        assert await receive(queue, 1) == [event("j1", 1)]


async def test_leaving_unsubscribes_once_the_last_listener_left(
        buses: tuple[RedisEventBus, ...], peek: redis.Redis) -> None:
    api, worker = buses
    async with listening(api, "j1") as staying:
        async with listening(api, "j1") as leaving:
            assert subscribers(peek, "j1") == 1  # one pubsub connection per bus, whatever the listeners
        assert api.listening_jobs() == ["j1"]
        worker.publish(event("j1", 1))
        assert await receive(staying, 1) == [event("j1", 1)]
        assert leaving.empty()  # a subscriber that left gets nothing more
        assert subscribers(peek, "j1") == 1
    assert api.listening_jobs() == []
    await eventually(lambda: subscribers(peek, "j1") == 0, timeout=WAIT_S)
    async with listening(api, "j1") as queue:  # and subscribing again works
        worker.publish(event("j1", 2))
        assert await receive(queue, 1) == [event("j1", 2)]


async def test_a_subscription_survives_a_redis_restart(
        buses: tuple[RedisEventBus, ...], redis_server: RedisServer, peek: redis.Redis) -> None:
    api, worker = buses
    async with listening(api, "j1") as queue:
        redis_server.stop()
        worker.publish(event("j1", 0))  # lost or late, but never raises
        redis_server.start()
        # Events may be lost until the bus has subscribed again: keep sending until one arrives. A
        # deadline checked here, not asyncio.timeout: a timeout cancelling wait_for can be swallowed.
        deadline = time.monotonic() + 30
        step = 0
        while True:
            assert time.monotonic() < deadline, "no event after the restart within 30s"
            step += 1
            worker.publish(event("j1", step))
            try:
                received = await asyncio.wait_for(queue.get(), 0.2)
            except TimeoutError:
                continue
            if received.step:  # not the one published during the outage (step 0)
                break
        assert api.listening_jobs() == ["j1"]
        assert subscribers(peek, "j1") == 1


async def test_close_stops_every_task_and_fails_waiting_subscribers(
        buses: tuple[RedisEventBus, ...], redis_server: RedisServer) -> None:
    api, worker = buses
    async with listening(api, "j1") as queue:
        worker.publish(event("j1", 1))
        assert await receive(queue, 1) == [event("j1", 1)]
    redis_server.stop()  # a subscriber now waits for a confirmation that cannot come
    waiting = asyncio.create_task(api.subscribe("j2").__aenter__())
    await eventually(lambda: "j2" in api.listening_jobs(), timeout=WAIT_S)
    for bus in (api, worker):
        await asyncio.wait_for(bus.close(), WAIT_S)
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(waiting, WAIT_S)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    worker.publish(event("j1", 2))  # dropped: nothing restarts after close
    await asyncio.wait_for(worker.flush(), WAIT_S)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_waiter_without_progress_gets_no_step_events(buses: tuple[RedisEventBus, ...]) -> None:
    api, worker = buses
    assert worker.wants_progress("j3")  # a worker cannot see listeners in other processes
    final = JobEvent(job_id="j3", type=EventType.status, status=JobStatus.completed, at=2000.0)
    async with AsyncExitStack() as stack:
        waiter = await asyncio.wait_for(stack.enter_async_context(api.subscribe("j3", progress=False)), WAIT_S)
        follower = await asyncio.wait_for(stack.enter_async_context(api.subscribe("j3")), WAIT_S)
        for e in (event("j3", 1), event("j3", 2), final):
            worker.publish(e)
        await asyncio.wait_for(worker.flush(), WAIT_S)
        assert await receive(follower, 3) == [event("j3", 1), event("j3", 2), final]
        assert await receive(waiter, 1) == [final] and waiter.empty()
