"""``Events`` across processes on Redis pub/sub: the process that changes a job publishes its events on
the job's channel (``RedisKeys.events``); every process with a local listener of that job receives them.

Per bus: one sender task publishing in order, and one pubsub connection whose reader task dispatches
messages to local queues; a job's channel is subscribed while it has a local listener. Best-effort:
events published while Redis is unreachable are lost; the job store holds the truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from pydantic import ValidationError
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from reelserve.cancellation import reraise_if_cancelled
from reelserve.jobs.step_followers import StepFollowers
from reelserve.redis_names import DEFAULT_NAMESPACE, RedisKeys
from reelserve.schemas import JobEvent

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError)  # a socket can surface OSError (TimeoutError is one) past redis-py
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 0.1, 5.0


@dataclass(eq=False)
class _Channel:
    """One job's channel in this process. SUBSCRIBE replies come back in the order the commands were
    sent, so counting them tells a subscriber when *its* SUBSCRIBE was confirmed."""

    job_id: str
    listeners: set[asyncio.Queue[JobEvent]] = field(default_factory=set)
    sent: int = 0  # SUBSCRIBEs sent (or owed by the next reconnect)
    confirmed: int = 0  # of those, answered
    replied: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on each answer


class RedisEventBus:
    """Same interface as ``engine.events.EventBus`` (the ``Events`` protocol), across processes.

    :param client: a ``redis.asyncio.Redis`` with RESP2 replies (either ``decode_responses``) that
        publishes. Borrowed: never closed here. The pubsub connection is a private one with the same
        settings, except that redis-py does not retry on it: a reconnect inside redis-py would silently
        drop the subscriptions, so the reader reconnects itself and subscribes again.
    :param namespace: prefix of every channel (``RedisKeys``).

    Use from one event loop. Tasks start on first use; ``close()`` stops them.
    """

    def __init__(self, client: redis.Redis, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.keys = RedisKeys(namespace)
        self._client = client
        shared = client.connection_pool
        self._pool = redis.ConnectionPool(
            connection_class=shared.connection_class, max_connections=1,
            **{**shared.connection_kwargs, "retry": Retry(NoBackoff(), 0)},
        )
        self._pubsub = PubSub(self._pool)
        self._channels: dict[str, _Channel] = {}
        self._steps = StepFollowers()
        self._outbox: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._live = False  # connected and every channel with listeners subscribed (or its SUBSCRIBE sent)
        self._closed = False

    def publish(self, event: JobEvent) -> None:
        """Non-blocking; call from the event loop. Events of one process reach Redis in publish order.
        A Redis error drops the event with a log line. Dropped silently once closed."""
        if self._closed:
            return
        self._outbox.put_nowait(event)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever(), name="redis-events-sender")

    @asynccontextmanager
    async def subscribe(self, job_id: str, progress: bool = True) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        """Every event of ``job_id`` published from when this yields until it is left (without
        ``progress``, all but the step events: ``Events.subscribe``). Yields only once
        Redis confirmed the subscription, so a caller that reads the job from the store afterwards misses
        nothing published after that read. Waits while Redis is unreachable: bound it if that matters.
        Raises ``RuntimeError`` once closed."""
        if self._closed:
            raise RuntimeError("event bus closed")
        name = self.keys.events(job_id)
        channel = self._channels.setdefault(name, _Channel(job_id))
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        channel.listeners.add(queue)
        try:
            if self._reader is None:
                self._reader = asyncio.create_task(self._read_forever(), name="redis-events-reader")
            first = len(channel.listeners) == 1
            channel.sent += first
            ticket = channel.sent  # a later listener waits for the first one's SUBSCRIBE, if still due
            if first:
                await self._send("SUBSCRIBE", name)
            while channel.confirmed < ticket:
                if self._closed:
                    raise RuntimeError("event bus closed")
                await channel.replied.wait()
            with self._steps.following(job_id, queue, progress):
                yield queue
        finally:
            channel.listeners.discard(queue)
            if not channel.listeners:
                self._forget_if_idle(name)
                await self._send("UNSUBSCRIBE", name)

    def wants_progress(self, job_id: str) -> bool:
        """Always: a listener may be in another process (this one cannot see it)."""
        return True

    def listening_jobs(self) -> list[str]:
        return [channel.job_id for channel in self._channels.values() if channel.listeners]

    async def flush(self) -> None:
        """Returns once every event published so far was sent (or dropped)."""
        await self._outbox.join()

    async def close(self) -> None:
        """Stops the tasks and closes the pubsub connection; events not sent yet are dropped (``flush``
        first to send them). Subscribers still waiting for a confirmation get ``RuntimeError``."""
        self._closed, self._live = True, False
        tasks = [task for task in (self._sender, self._reader) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()
        for channel in self._channels.values():
            channel.replied.set()
        await self._pubsub.aclose()
        await self._pool.aclose()

    async def _send_forever(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await self._client.publish(self.keys.events(event.job_id), event.model_dump_json())
            except REDIS_ERRORS as error:
                reraise_if_cancelled()
                log.warning("events: %s event of job %s dropped (%s: %s)",
                            event.type, event.job_id, type(error).__name__, error)
            finally:
                self._outbox.task_done()

    async def _send(self, *command: str) -> None:
        """A pubsub command, if connected; if not, the reader's reconnect subscribes what has listeners.
        Never raises for Redis: a broken connection is the reader's to notice and repair."""
        connection = self._pubsub.connection
        if not self._live or connection is None or not connection.is_connected:
            return
        try:
            await connection.send_command(*command, check_health=False)  # a health check would read
        except REDIS_ERRORS as error:
            self._live = False  # the failed send disconnected: the reader must not read on unsubscribed
            log.warning("events: %s failed (%s: %s)", command[0], type(error).__name__, error)

    async def _read_forever(self) -> None:
        delay = _RECONNECT_MIN_S
        while True:
            try:
                # Not just _live: redis-py's read would quietly reconnect a dropped connection, unsubscribed.
                connection = self._pubsub.connection
                if not self._live or connection is None or not connection.is_connected:
                    await self._connect()
                message = await self._pubsub.get_message(timeout=None)  # blocks; fine with no channels
            except REDIS_ERRORS as error:
                reraise_if_cancelled()
                self._live = False
                log.warning("events: redis subscription lost (%s: %s); reconnecting in %.1fs",
                            type(error).__name__, error, delay)
                if self._pubsub.connection is not None:
                    await self._pubsub.connection.disconnect(nowait=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            if message is not None:
                delay = _RECONNECT_MIN_S
                self._dispatch(message)

    async def _connect(self) -> None:
        """(Re)connect and subscribe every channel with listeners in one command. Answers owed on the old
        connection never come, so each such channel now waits for exactly this one."""
        await self._pubsub.connect()
        names = []
        for name, channel in list(self._channels.items()):
            if channel.listeners:
                channel.confirmed = channel.sent - 1
                names.append(name)
            else:
                del self._channels[name]
        assert self._pubsub.connection is not None
        self._live = True  # before the send: a channel added while it drains sends its own SUBSCRIBE
        if names:
            await self._pubsub.connection.send_command("SUBSCRIBE", *names, check_health=False)

    def _dispatch(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        channel = self._channels.get(name)
        if channel is None:  # left already; a late message or unsubscribe answer
            return
        if message["type"] == "message":
            try:
                event = JobEvent.model_validate_json(message["data"])
            except ValidationError:
                log.warning("events: unreadable message on %s, skipped", name)
                return
            for queue in channel.listeners:
                if self._steps.takes(queue, event):
                    queue.put_nowait(event)
        elif message["type"] == "subscribe":
            channel.confirmed = min(channel.confirmed + 1, channel.sent)
            channel.replied.set()
            channel.replied = asyncio.Event()
            self._forget_if_idle(name)

    def _forget_if_idle(self, name: str) -> None:
        channel = self._channels.get(name)
        if channel is not None and not channel.listeners and channel.confirmed >= channel.sent:
            del self._channels[name]  # no listener, no answer due
