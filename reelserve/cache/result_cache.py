"""The result cache the engine asks before running a job: L1 (in process), a bloom filter, L2 (Redis).

A lookup tries L1, then asks the bloom filter whether Redis could hold the key at all, then Redis.
Redis is an optimisation, never a dependency: every Redis call goes through ``_redis_call``, which
turns a failure into a miss or a no-op and stops calling Redis for ``retry_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from redis.exceptions import RedisError

from reelserve.cache.bloom import KeyFilter
from reelserve.cache.entry import CacheEntry, CacheLevel, Hit
from reelserve.cache.key import prompt_hash
from reelserve.cache.memory import MemoryTier
from reelserve.cache.redis_tier import RedisTier
from reelserve.cancellation import reraise_if_cancelled
from reelserve.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# redis-py raises its own errors, but a socket can also surface OSError (builtin ConnectionError is one)
# and a read deadline TimeoutError.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# Backoff between attempts to resubscribe after the event subscription fails.
_LISTEN_DELAY_MIN_S = 0.1
_LISTEN_DELAY_MAX_S = 5.0


class RemovalListener(Protocol):
    """Told when entries leave the cache here (invalidation, job deletion, flush), so state kept beside
    the entries (the semantic index) goes with them. Must not raise for a Redis failure."""

    async def removed(self, keys: set[str]) -> None: ...

    async def flushed(self) -> None: ...


class ResultCache:
    """
    :param memory: the in-process tier; always used.
    :param redis: the shared tier; None keeps the cache in this process only.
    :param metrics: where counters go; a private ``Metrics`` when None.
    :param use_bloom: skip Redis for keys the bloom filter rules out (only with ``redis``).
    :param bloom: a filter sized for the expected number of keys; ``KeyFilter()`` when None.
    :param retry_after_s: after a Redis failure, how long to skip Redis before trying it again.
    """

    def __init__(
        self,
        memory: MemoryTier,
        redis: RedisTier | None = None,
        *,
        metrics: Metrics | None = None,
        use_bloom: bool = True,
        bloom: KeyFilter | None = None,
        retry_after_s: float = 2.0,
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.metrics = metrics or Metrics()
        self.bloom = (bloom or KeyFilter()) if use_bloom and redis is not None else None
        self.retry_after_s = retry_after_s
        # The filter is trusted only while it mirrors Redis: built by a scan after subscribing, and
        # kept current by "add" events. Until then (or after losing the subscription) lookups bypass it.
        self._bloom_ready = False
        self._down_until = 0.0
        self._synced_once = False
        self._listen_delay_s = _LISTEN_DELAY_MIN_S
        self._listener: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()
        self._background: set[asyncio.Task[object]] = set()
        self._evictions_reported = 0
        self.removal_listener: RemovalListener | None = None
        self.metrics.cache_entries.labels(level="l1").set_function(lambda: len(self.memory))
        self.metrics.cache_bytes.labels(level="l1").set_function(lambda: self.memory.nbytes)

    @property
    def redis_up(self) -> bool:
        """False while Redis is being skipped after a failure."""
        return self.redis is not None and time.monotonic() >= self._down_until

    async def start(self, timeout_s: float = 10.0) -> None:
        """Subscribe to other processes' changes and build the bloom filter. Returns once that is done,
        or has failed once (it keeps retrying in the background), or after ``timeout_s``."""
        if self.redis is None or self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen_forever(), name="result-cache-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_sync.wait(), timeout_s)

    async def close(self) -> None:
        """Stop the listener and pending touches, and close the Redis client."""
        tasks = [t for t in (self._listener, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        if self.redis is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.redis.close()

    async def lookup(self, key: str) -> Hit | None:
        """The cached result for ``key``, or None. Never raises for a Redis failure."""
        started = time.perf_counter()
        entry = self.memory.get(key)
        if entry is not None:
            if self.redis_up:  # so an entry hot in L1 does not expire in Redis meanwhile
                self._spawn(self._redis_call("touch", lambda r: r.touch(key), False))
            return self._hit(entry, "l1", started)
        self._count("l1", "miss")
        if self.redis is None:
            return None
        if self.bloom is not None and self._bloom_ready and not self.bloom.might_contain(key):
            self.metrics.cache_bloom_negatives.inc()
            return None
        entry = await self._redis_call("get", lambda r: r.get(key), None)
        if entry is None:
            self._count("l2", "miss")
            return None
        self._put_l1(entry)
        return self._hit(entry, "l2", started)

    async def store(self, entry: CacheEntry) -> None:
        """Keep ``entry`` in both tiers; if Redis is unreachable, in L1 only."""
        self._put_l1(entry)
        if self.redis is not None:
            await self._redis_call("put", lambda r: r.put(entry), None)
        if self.bloom is not None:
            self.bloom.add(entry.key)

    async def invalidate_key(self, key: str) -> int:
        """Remove one entry from both tiers (and, via pub/sub, other processes' L1); returns 0 or 1."""
        return await self._remove({key})

    async def invalidate_prompt(self, prompt: str) -> int:
        """Remove every entry for this prompt (after normalisation), whatever its model or settings."""
        digest = prompt_hash(prompt)
        keys = self.memory.keys_for_prompt(digest)
        keys |= await self._redis_call("keys_for_prompt", lambda r: r.keys_for_prompt(digest), set())
        return await self._remove(keys)

    async def invalidate_model(self, model: str) -> int:
        keys = self.memory.keys_for_model(model)
        keys |= await self._redis_call("keys_for_model", lambda r: r.keys_for_model(model), set())
        return await self._remove(keys)

    async def drop_job(self, job_id: str) -> int:
        """Remove the entries whose video came from ``job_id``: call it when the job's files are deleted."""
        keys = self.memory.keys_for_job(job_id)
        keys |= await self._redis_call("keys_for_job", lambda r: r.keys_for_job(job_id), set())
        return await self._remove(keys)

    async def drop_entry(self, key: str, video_key: str) -> int:
        """Remove ``key``'s entry if it names ``video_key``: a run that lost its job takes back its own
        entry, never the one another job or run stored under the same key since."""
        here = self.memory.get(key)
        shared = here if self.redis is None else await self._redis_call("get", lambda r: r.get(key), None)
        if shared is not None and shared.video_key == video_key:
            return await self._remove({key})
        if here is not None and here.video_key == video_key:
            self.memory.delete(key)  # only this process's copy was ours: the shared entry is another run's
        return 0

    async def flush(self) -> int:
        """Empty both tiers. Returns the larger tier's count: L1 holds copies of L2 entries."""
        in_l1 = self.memory.clear()
        in_l2 = await self._redis_call("flush", lambda r: r.flush(), 0)
        if self.bloom is not None:
            self.bloom.clear()
        if self.removal_listener is not None:
            await self.removal_listener.flushed()
        return max(in_l1, in_l2)

    async def stats(self) -> dict[str, object]:
        """Sizes and counters, for the admin API. Counting L2 scans Redis: not for a hot path."""
        l2_entries = await self._redis_call("count", lambda r: r.count(), None)
        sample = self.metrics.registry.get_sample_value
        return {
            "l1": {
                "entries": len(self.memory),
                "bytes": self.memory.nbytes,
                "max_entries": self.memory.max_entries,
                "max_bytes": self.memory.max_bytes,
                "evictions": self.memory.evictions,
            },
            "l2": {"configured": self.redis is not None, "up": self.redis_up, "entries": l2_entries},
            "bloom": {"enabled": self.bloom is not None, "ready": self._bloom_ready},
            "requests": {
                f"{level}_{result}": sample("reelserve_cache_requests_total", {"level": level, "result": result})
                or 0.0
                for level in ("l1", "l2")
                for result in ("hit", "miss")
            },
            "bloom_negatives": sample("reelserve_cache_bloom_negatives_total") or 0.0,
            "model_seconds_saved": sample("reelserve_cache_model_seconds_saved_total") or 0.0,
            "errors": {
                s.labels["op"]: s.value
                for metric in self.metrics.cache_errors.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            },
        }

    async def _remove(self, keys: set[str]) -> int:
        removed = {key for key in keys if self.memory.delete(key)}
        if keys:
            removed |= await self._redis_call("delete", lambda r: r.delete(keys), set())
            if self.removal_listener is not None:
                # All keys asked, not only those found: state beside an entry can outlive it.
                await self.removal_listener.removed(keys)
        return len(removed)

    def _hit(self, entry: CacheEntry, level: CacheLevel, started: float) -> Hit:
        self._count(level, "hit")
        self.metrics.cache_hit_seconds.observe(time.perf_counter() - started)
        self.metrics.cache_model_seconds_saved.inc(entry.model_seconds)
        return Hit(entry=entry, level=level)

    def _count(self, level: CacheLevel, result: str) -> None:
        self.metrics.cache_requests.labels(level=level, result=result).inc()

    def _put_l1(self, entry: CacheEntry) -> None:
        self.memory.put(entry)
        evicted = self.memory.evictions - self._evictions_reported
        if evicted:
            self.metrics.cache_evictions.labels(level="l1").inc(evicted)
            self._evictions_reported = self.memory.evictions

    async def redis_call(self, op: str, call: Callable[[RedisTier], Awaitable[T]], default: T) -> T:
        """``call(redis)`` under this cache's outage handling: ``default`` when Redis is absent, resting
        after a failure, or failing now (counted in ``reelserve_cache_errors_total{op}``). For code that
        keeps its own data on the cache's Redis, such as the semantic store."""
        return await self._redis_call(op, call, default)

    async def _redis_call(self, op: str, call: Callable[[RedisTier], Awaitable[T]], default: T) -> T:
        """``call(redis)``, or ``default`` when Redis is absent, resting after a failure, or failing now."""
        if self.redis is None or not self.redis_up:
            return default
        try:
            return await call(self.redis)
        except REDIS_ERRORS as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            self.metrics.cache_errors.labels(op=op).inc()
            # One line per failure, not a traceback: failures are at most one per retry_after_s.
            log.warning("cache: redis %s failed (%s: %s); skipping redis for %.1fs",
                        op, type(exc).__name__, exc, self.retry_after_s)
            return default

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listen_forever(self) -> None:
        assert self.redis is not None
        while True:
            try:
                await self.redis.listen(self._on_event, on_subscribed=self._resync)
            except REDIS_ERRORS as exc:
                reraise_if_cancelled()
                self._bloom_ready = False  # adds announced from now until the next resync are lost
                self.metrics.cache_errors.labels(op="listen").inc()
                log.warning("cache: redis subscription lost (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, self._listen_delay_s)
            self._first_sync.set()
            await asyncio.sleep(self._listen_delay_s)
            self._listen_delay_s = min(self._listen_delay_s * 2, _LISTEN_DELAY_MAX_S)

    async def _resync(self) -> None:
        """Runs once subscribed, before any event: from here on, events keep us current."""
        assert self.redis is not None
        if self._synced_once:
            self.memory.clear()  # while unsubscribed we may have missed "del" events
        if self.bloom is not None:
            fresh = KeyFilter(self.bloom.expected_items, self.bloom.false_positive_rate)
            async for key in self.redis.all_keys():
                fresh.add(key)
            self.bloom = fresh
            self._bloom_ready = True
        self._synced_once = True
        self._listen_delay_s = _LISTEN_DELAY_MIN_S
        self._down_until = 0.0  # Redis just answered: stop resting after an earlier failure
        self._first_sync.set()

    def _on_event(self, kind: str, key: str | None) -> None:
        if kind == "add" and key is not None and self.bloom is not None:
            self.bloom.add(key)
        elif kind == "del" and key is not None:
            self.memory.delete(key)
        elif kind == "flush":
            self.memory.clear()
            if self.bloom is not None:
                self.bloom.clear()
