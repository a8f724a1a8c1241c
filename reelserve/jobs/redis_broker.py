"""``Broker`` on Redis Streams: the distributed mode's queue, shared by every API and engine process.

One stream per (model, level), all read through one consumer group, so each entry goes to one worker.
A job's life: ``put`` (API side: XADD plus the job id -> entry map, one script) -> read by a worker
into its local buffer (XREADGROUP: the entry is now in that worker's pending list, the PEL) -> ``take``
-> ``ack`` once the result is stored and the job final (XACK + XDEL). A worker that dies leaves its
entries pending; another worker's ``reclaim`` takes them over once idle for ``claim_idle_ms``, or
dead-letters those delivered more than ``max_deliveries`` times. Names: ``reelserve.redis_names``; scripts: ``redis_scripts``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from reelserve.jobs.base import Preempted
from reelserve.jobs.redis_scripts import (
    ACK_ENTRY_LUA,
    DEPTH_LUA,
    DISCARD_ENTRY_LUA,
    POSITION_LUA,
    PUT_ENTRY_LUA,
    RECLAIM_ENTRIES_LUA,
    RELEASE_ENTRIES_LUA,
    TOUCH_ENTRIES_LUA,
)
from reelserve.jobs.waiting import WaitingJobs
from reelserve.redis_names import BROKER_GROUP, DEFAULT_NAMESPACE, RedisKeys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class _Entry:
    """A stream entry this worker holds (read, reclaimed or taken): it is in this consumer's PEL."""

    job_id: str
    batch_key: str
    level: int
    entry_id: str

    @property
    def key(self) -> str:
        """Its id in the buffer: entry ids are unique within one stream only, and each level has its own."""
        return f"{self.level}|{self.entry_id}"


class RedisStreamsBroker:
    """Implements ``reelserve.jobs.base.Broker`` on Redis Streams, except that ``discard``,
    ``position``, ``depth`` and ``depth_by_level`` are coroutines here (each is a Redis call).

    :param client: a ``redis.asyncio.Redis`` with RESP2 replies (the default; either
        ``decode_responses``). Borrowed: the broker never closes it. Its ``socket_timeout``, if any,
        must exceed ``block_ms``.
    :param model: the model whose queue this is; brokers of different models share nothing.
    :param consumer: this worker's name in the consumer group, unique among live workers. A worker
        restarted under the same name sees its old entries again only through ``reclaim``.
    :param namespace: prefix of every key (``RedisKeys``).
    :param levels: the priority levels (0 most urgent); ``put`` rejects any other.
    :param read_count: most entries a worker reads ahead into its local buffer, per level. They are
        owned by it from then on (no longer counted by ``depth``/``position``, not taken by others).
    :param block_ms: longest single blocking read; ``take`` re-checks its deadline between reads.
    :param claim_idle_ms: how long an entry must go untouched (no take, heartbeat, reclaim by its
        holder) before another worker's ``reclaim`` takes it over.
    :param max_deliveries: most times a job is handed to a worker, the first read included;
        ``reclaim`` dead-letters it instead of handing it out once more.

    Worker-side state (the local buffer, the taken jobs) lives in this object: use it from one event
    loop. The API side (``put``, ``discard``, ``position``, ``depth``) keeps none and can be used anywhere.
    """

    def __init__(
        self,
        client: redis.Redis,
        model: str,
        consumer: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        levels: Sequence[int] = (0, 1, 2),
        read_count: int = 8,
        block_ms: int = 200,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 3,
    ) -> None:
        if not model or not consumer:
            raise ValueError("model and consumer must be non-empty")
        if not levels or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be distinct and at least one; got {levels!r}")
        if min(read_count, block_ms, claim_idle_ms, max_deliveries) < 1:
            raise ValueError("read_count, block_ms, claim_idle_ms and max_deliveries must be at least 1")
        self.keys = RedisKeys(namespace)
        self.model, self.consumer = model, consumer
        self.levels = tuple(sorted(levels))
        self.read_count, self.block_ms = read_count, block_ms
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self._client = client
        self._streams = {level: self.keys.stream(model, level) for level in self.levels}
        self._level_of_stream = {stream: level for level, stream in self._streams.items()}
        self._stream_prefix = self.keys.stream_prefix(model)
        self._entries = self.keys.broker_entries(model)
        self._buffer: WaitingJobs[_Entry] = WaitingJobs()  # read ahead, by ``_Entry.key``: the batching policy's queue
        self._taken: dict[str, _Entry] = {}
        self._groups_ready = False
        self._put = client.register_script(PUT_ENTRY_LUA)
        self._discard = client.register_script(DISCARD_ENTRY_LUA)
        self._ack = client.register_script(ACK_ENTRY_LUA)
        self._touch_script = client.register_script(TOUCH_ENTRIES_LUA)
        self._reclaim = client.register_script(RECLAIM_ENTRIES_LUA)
        self._release = client.register_script(RELEASE_ENTRIES_LUA)
        self._depth = client.register_script(DEPTH_LUA)
        self._position = client.register_script(POSITION_LUA)

    # -- API side ---------------------------------------------------------------------------------
    async def put(self, job_id: str, batch_key: str, level: int = 0) -> None:
        """Queue a job at the end of its level. A job that already has an entry keeps it (no-op).

        Raises ``ValueError`` for a level not in ``levels``."""
        if level not in self._streams:
            raise ValueError(f"level {level} is not one of {self.levels}")
        keys, args = [self._streams[level], self._entries], [self._stream_prefix, job_id, batch_key, level]
        await self._put(keys=keys, args=args)

    async def discard(self, job_id: str) -> bool:
        """Remove a queued job; False if a worker already has it (read into its buffer, or taken) or
        it is unknown. A discarded job is never delivered."""
        return bool(await self._discard(keys=[self._entries], args=[self._stream_prefix, job_id]))

    async def depth(self) -> int:
        """Undelivered jobs, all levels (see ``depth_by_level``)."""
        return sum((await self.depth_by_level()).values())

    async def depth_by_level(self) -> dict[int, int]:
        """Undelivered jobs per level, levels with none left out.

        Exact, in one script: stream length minus the group's pending count, which holds because
        every script removes an entry from its stream when it leaves the PEL. (XINFO GROUPS ``lag``
        is not used: Redis reports it as NULL once an undelivered entry was deleted, i.e. after any
        ``discard``.) Jobs read ahead into workers' buffers are delivered, so not counted."""
        counts = await self._depth(keys=list(self._streams.values()), args=[])
        return {level: int(n) for level, n in zip(self.levels, counts, strict=True) if int(n)}

    async def position(self, job_id: str) -> int | None:
        """Undelivered jobs ahead of ``job_id`` (0 = next): all of the more urgent levels, plus the
        older ones of its own level. None once delivered (or unknown). Exact for the streams, but a
        worker asking for ``level=...`` or a batch key, or holding jobs in its buffer, may serve
        others first. Costs O(jobs ahead in its own level) in Redis."""
        ahead = await self._position(
            keys=[self._entries, *self._streams.values()], args=[self._stream_prefix, job_id, *self.levels]
        )
        return None if int(ahead) < 0 else int(ahead)

    # -- worker side ------------------------------------------------------------------------------
    async def take(
        self,
        batch_key: str | None = None,
        timeout: float | None = None,
        *,
        level: int | None = None,
        preempt_below: int | None = None,
        urgent_first: bool = False,
        up_to: int | None = None,
    ) -> tuple[str, str] | None:
        """``Broker.take``, from this worker's buffer, reading ahead from Redis most urgent level first
        (``level`` first, when given) until the buffer holds a match or that level's buffer is full.

        A job is handed out only after a check that this worker still holds its entry (one script,
        which also resets its idle time); one reclaimed meanwhile by another worker is dropped here.
        ``timeout`` in seconds; None waits forever, 0 takes only what is already queued."""
        level = level if level in self._streams else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self._read_ahead(self._order(level), batch_key)
            urgent = preempt_below is not None and self._buffer.urgent(preempt_below, batch_key)
            if urgent and urgent_first:
                raise Preempted
            key = self._buffer.first(batch_key, level, up_to=up_to)
            if key is not None:
                entry = self._buffer.pop(key)
                try:
                    kept = await self._touch([entry])
                except BaseException:
                    self._buffer.push_front([(entry.key, entry)])
                    raise
                if kept:
                    self._taken[entry.job_id] = entry
                    return entry.job_id, entry.batch_key
                continue  # reclaimed by another worker: look again
            if urgent:
                raise Preempted
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await self._wait(deadline)

    async def requeue(self, job_ids: list[str], batch_key: str, levels: dict[str, int]) -> None:
        """Put jobs taken here but not started back at the front of this worker's buffer, in order.
        They stay this worker's (in its PEL). Jobs not taken here are ignored; ``batch_key`` and
        ``levels`` are not needed: each entry knows its own."""
        entries = [self._taken.pop(job_id) for job_id in job_ids if job_id in self._taken]
        self._buffer.push_front((entry.key, entry) for entry in entries)

    async def ack(self, job_id: str) -> bool:
        """The job is done: remove its entry (XACK, XDEL, map). Call only once its result is stored
        and its record final. Removes the entry whichever worker holds it, so a late ack from a worker
        whose job was reclaimed ends it for the new holder too (its ``take`` then skips it; if it
        already runs it, the job store's status check settles the duplicate). True if it was pending."""
        self._taken.pop(job_id, None)
        for entry in self._buffered():
            if entry.job_id == job_id:
                self._buffer.remove(entry.key)
        return bool(await self._ack(keys=[self._entries], args=[self._stream_prefix, job_id]))

    async def heartbeat(self, job_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of the given taken jobs and of everything in the buffer, so that no
        other worker reclaims them. Call well within ``claim_idle_ms``. Returns the given jobs this
        worker no longer holds (reclaimed by another worker after a stall, acked, or never taken here)."""
        mine = [self._taken[job_id] for job_id in job_ids if job_id in self._taken]
        kept = await self._touch([*mine, *self._buffered()])
        held = {entry.job_id for entry in kept}
        return [job_id for job_id in job_ids if job_id not in held]

    async def reclaim(self) -> tuple[list[str], list[str]]:
        """Take over the entries idle longer than ``claim_idle_ms`` (their worker is presumed dead),
        into this worker's buffer at the front of their levels, oldest first; they keep their level.

        Returns ``(reclaimed job ids, dead-lettered job ids)``. A job delivered more than
        ``max_deliveries`` times is moved to the dead-letter stream (reason ``worker_lost``) instead:
        the caller must fail it. Touches what this worker holds first, so it never reclaims its own."""
        await self._ensure_groups()
        held = {entry.key for entry in await self._touch([*self._taken.values(), *self._buffered()])}
        reclaimed: list[str] = []
        dead: list[str] = []
        for level, stream in self._streams.items():
            claimed, lost = await self._reclaim(
                keys=[stream, self.keys.dead_letters(self.model), self._entries],
                args=[self.consumer, self.claim_idle_ms, self.max_deliveries, level],
            )
            entries = [
                _Entry(_text(claimed[i + 1]), _text(claimed[i + 2]), level, _text(claimed[i]))
                for i in range(0, len(claimed), 3)
            ]
            fresh = [entry for entry in entries if entry.key not in held]
            self._buffer.push_front((entry.key, entry) for entry in fresh)
            reclaimed += [entry.job_id for entry in fresh]
            dead += [_text(job_id) for job_id in lost]
        return reclaimed, dead

    async def release(self) -> int:
        """Graceful shutdown: give every buffered job back, as a new undelivered entry at the end of
        its level, so another worker can take it at once. Requeue taken-but-unstarted jobs first.
        Returns how many were given back (entries already reclaimed by others are just dropped)."""
        released = 0
        for level in self.levels:
            args: list[Any] = [self.consumer, level]
            for key, entry in list(self._buffer.items(level)):
                args += [entry.entry_id, entry.job_id, entry.batch_key]
                self._buffer.remove(key)
            if len(args) > 2:
                released += int(await self._release(keys=[self._streams[level], self._entries], args=args))
        return released

    # -- internals --------------------------------------------------------------------------------
    def _order(self, level: int | None) -> list[int]:
        if level is None or level not in self._streams:
            return list(self.levels)
        return [level, *(lvl for lvl in self.levels if lvl != level)]

    def _buffered(self) -> list[_Entry]:
        return [entry for _, entry in self._buffer.items()]

    async def _read_ahead(self, order: list[int], batch_key: str | None) -> None:
        """Read (without blocking) each level in ``order`` whose buffer has no match, until one has."""
        for level in order:
            room = self.read_count - self._buffer.depth(level)
            if self._buffer.first(batch_key, level, only=True) is None and room > 0:
                await self._read([level], room, block_ms=None)
            if self._buffer.first(batch_key, level, only=True) is not None:
                return

    async def _wait(self, deadline: float | None) -> None:
        """Block on every level with buffer room until an entry arrives or ``block_ms`` (or the
        deadline) passes."""
        left_ms = self.block_ms if deadline is None else int((deadline - time.monotonic()) * 1000)
        block_ms = max(1, min(self.block_ms, left_ms))  # BLOCK 0 would mean forever
        rooms = {lvl: self.read_count - self._buffer.depth(lvl) for lvl in self.levels}
        readable = [lvl for lvl, room in rooms.items() if room > 0]
        if readable:
            await self._read(readable, min(rooms[lvl] for lvl in readable), block_ms=block_ms)
        else:  # every buffer is full: only this worker's own takes and requeues change anything
            await asyncio.sleep(block_ms / 1000)

    async def _read(self, levels: list[int], count: int, block_ms: int | None) -> None:
        await self._ensure_groups()
        streams = {self._streams[level]: ">" for level in levels}
        try:
            reply = await self._client.xreadgroup(BROKER_GROUP, self.consumer, streams, count, block_ms)
        except ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            self._groups_ready = False  # Redis lost them (restarted without persistence): make them again
            return
        for stream, entries in reply or []:
            level = self._level_of_stream[_text(stream)]
            for entry_id, fields in entries:
                data = {_text(k): _text(v) for k, v in fields.items()}
                entry = _Entry(data["job_id"], data["batch_key"], level, _text(entry_id))
                self._buffer.append(entry.key, entry)

    async def _touch(self, entries: list[_Entry]) -> list[_Entry]:
        """Reset the idle time of the entries this worker still holds; forget the others. Returns the kept."""
        if not entries:
            return []
        flags = await self._touch_script(
            keys=[self._streams[entry.level] for entry in entries],
            args=[self.consumer, *(entry.entry_id for entry in entries)],
        )
        kept = []
        for entry, flag in zip(entries, flags, strict=True):
            if int(flag):
                kept.append(entry)
                continue
            if self._taken.get(entry.job_id) == entry:
                del self._taken[entry.job_id]
            self._buffer.remove(entry.key)
        return kept

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in self._streams.values():
            try:
                await self._client.xgroup_create(stream, BROKER_GROUP, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True
