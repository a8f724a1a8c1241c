"""L2: cache entries in Redis, shared by every process, with index sets and change events.

Only metadata lives here (where the video is in storage), never video bytes. The names are
``reelserve.redis_names.CacheKeys``, under the server's ``--redis-namespace``; the scripts are here. Errors from Redis propagate; ``ResultCache``
decides what an outage means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from reelserve.cache.entry import CacheEntry
from reelserve.redis_names import CacheKeys, RedisKeys

log = logging.getLogger(__name__)

DEFAULT_PREFIX = RedisKeys().cache.prefix  # "{reelserve}:cache:", the default namespace's
DEFAULT_TTL_S = 7 * 24 * 3600

# Shared by GET and TOUCH: extend the entry and, so invalidation can still find it, its index sets.
# Every entry and index gets the full TTL, so an index always outlives the entries it lists.
# Index names are built inside the scripts from the entry's fields and the prefix: Cluster allows such
# undeclared keys because the prefix carries the namespace's hash tag, so they share the entry's slot.
_REFRESH_LUA = """
local ttl = tonumber(ARGV[1])
if redis.call('EXPIRE', KEYS[1], ttl) == 0 then return nil end
local f = redis.call('HMGET', KEYS[1], 'model', 'prompt_hash', 'job_id')
redis.call('EXPIRE', ARGV[2] .. 'by-model:' .. f[1], ttl)
redis.call('EXPIRE', ARGV[2] .. 'by-prompt:' .. f[2], ttl)
redis.call('EXPIRE', ARGV[2] .. 'by-job:' .. f[3], ttl)
"""
GET_LUA = _REFRESH_LUA + "return redis.call('HGETALL', KEYS[1])"
TOUCH_LUA = _REFRESH_LUA + "return 1"

# KEYS are entry hashes, ARGV[1] the prefix, ARGV[i+1] the cache key of KEYS[i]. Returns the cache keys
# that existed. Publishes "del" for every key asked, since another process's L1 may hold an entry
# that has already expired here.
DELETE_LUA = """
local prefix = ARGV[1]
local removed = {}
for i, entry in ipairs(KEYS) do
  local key = ARGV[i + 1]
  local f = redis.call('HMGET', entry, 'model', 'prompt_hash', 'job_id')
  if redis.call('DEL', entry) == 1 then
    redis.call('SREM', prefix .. 'by-model:' .. f[1], key)
    redis.call('SREM', prefix .. 'by-prompt:' .. f[2], key)
    redis.call('SREM', prefix .. 'by-job:' .. f[3], key)
    removed[#removed + 1] = key
  end
  redis.call('PUBLISH', prefix .. 'events', 'del ' .. key)
end
return removed
"""

EventCallback = Callable[[str, str | None], None]  # (kind, key): "add"/"del" with a key, "flush" without


class RedisTier:
    """
    :param client: a ``redis.asyncio.Redis``; give it short socket timeouts (see ``redis_tier_from_url``).
    :param ttl_s: entries not read for this long expire; every read or touch restarts it.
    :param prefix: namespace for every key and the events channel.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int = DEFAULT_TTL_S, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)
        self.names = CacheKeys(prefix)
        self._get = client.register_script(GET_LUA)
        self._touch = client.register_script(TOUCH_LUA)
        self._delete = client.register_script(DELETE_LUA)

    async def get(self, key: str) -> CacheEntry | None:
        """The entry, with its TTL (and its indexes') restarted in the same atomic step."""
        flat = await self._get(keys=[self.names.entry(key)], args=[self.ttl_s, self.names.prefix])
        if not flat:
            return None
        try:
            return CacheEntry.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))
        except (KeyError, ValueError):
            # Written by an incompatible version: a miss, and the next store of this key replaces it.
            log.warning("cache: unreadable entry %s in redis, treated as a miss", key)
            return None

    async def touch(self, key: str) -> bool:
        """Restart the TTL without reading; False if the entry is gone."""
        return bool(await self._touch(keys=[self.names.entry(key)], args=[self.ttl_s, self.names.prefix]))

    async def put(self, entry: CacheEntry) -> None:
        """Write the entry and its indexes, and announce it, in one transaction."""
        names = self.names
        indexes = (names.by_model(entry.model), names.by_prompt(entry.prompt_hash), names.by_job(entry.job_id))
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(names.entry(entry.key), mapping=entry.to_redis())
            pipe.expire(names.entry(entry.key), self.ttl_s)
            for index in indexes:
                pipe.sadd(index, entry.key)
                pipe.expire(index, self.ttl_s)
            pipe.publish(names.events, f"add {entry.key}")
            await pipe.execute()

    async def delete(self, keys: Iterable[str]) -> set[str]:
        """Delete entries (and their index memberships); returns the keys that existed."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        removed = await self._delete(keys=[self.names.entry(k) for k in keys], args=[self.names.prefix, *keys])
        return {_text(k) for k in removed}

    async def keys_for_model(self, model: str) -> set[str]:
        return await self._members(self.names.by_model(model))

    async def keys_for_prompt(self, prompt_hash: str) -> set[str]:
        return await self._members(self.names.by_prompt(prompt_hash))

    async def keys_for_job(self, job_id: str) -> set[str]:
        return await self._members(self.names.by_job(job_id))

    async def all_keys(self) -> AsyncIterator[str]:
        """Every stored cache key, by SCAN (never blocks Redis); may repeat a key, as SCAN may."""
        skip = len(self.names.entry(""))
        async for name in self.client.scan_iter(match=self.names.entry_pattern, count=1000):
            yield _text(name)[skip:]

    async def count(self) -> int:
        return sum([1 async for _ in self.all_keys()])

    async def flush(self) -> int:
        """Remove everything under the prefix and announce it; returns how many entries there were."""
        entries = 0
        batch: list[str] = []
        entry_prefix = self.names.entry("")
        async for name in self.client.scan_iter(match=self.names.everything_pattern, count=1000):
            batch.append(_text(name))
            if batch[-1].startswith(entry_prefix):
                entries += 1
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch.clear()
        if batch:
            await self.client.unlink(*batch)
        await self.client.publish(self.names.events, "flush")
        return entries

    async def ttl(self, key: str) -> float | None:
        """Seconds until the entry expires, or None if it does not exist."""
        ms = await self.client.pttl(self.names.entry(key))
        return None if ms < 0 else ms / 1000

    async def listen(
        self, on_event: EventCallback, on_subscribed: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Call ``on_event(kind, key)`` for each change any process announces, until cancelled.

        ``on_subscribed`` runs once the subscription is confirmed and before any event is handled,
        so state loaded there (a key scan) misses nothing. Raises when the connection fails.
        """
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.names.events)
            await _confirmed(pubsub)
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                # A bounded wait, not listen(): some redis-py versions apply socket_timeout to a
                # blocking pub/sub read, which would end a quiet subscription.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message["type"] != "message":
                    continue
                kind, _, key = _text(message["data"]).partition(" ")
                on_event(kind, key or None)
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self.client.aclose()

    async def _members(self, name: str) -> set[str]:
        return {_text(m) for m in await self.client.smembers(name)}


def redis_tier_from_url(url: str, ttl_s: int = DEFAULT_TTL_S, prefix: str = DEFAULT_PREFIX) -> RedisTier:
    """A tier on a client that gives up fast: a dead Redis must cost a request a miss, not a stall.

    Half-second socket timeouts, and one immediate retry (redis-py's default is ten, with backoff):
    enough to replace a pooled connection that a Redis restart broke.
    """
    client = aioredis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), retries=1)
    )
    return RedisTier(client, ttl_s=ttl_s, prefix=prefix)


async def _confirmed(pubsub: aioredis.client.PubSub, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            message = await pubsub.get_message(timeout=timeout)
            if message is not None and message["type"] == "subscribe":
                return


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
