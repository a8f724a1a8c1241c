"""L1: an in-process LRU of cache entries, bounded by count and by bytes, with a sliding TTL.

It answers a repeat in microseconds without a network hop. It is only a copy: Redis (L2) is the
shared truth, and other processes' invalidations reach this tier through pub/sub.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from reelserve.cache.entry import CacheEntry


@dataclass(slots=True)
class _Slot:
    entry: CacheEntry
    nbytes: int
    expires_at: float


class _EvictingLRU(LRUCache[str, _Slot]):
    """cachetools evicts through ``popitem``; hooking it is how we learn what was evicted."""

    def __init__(self, max_bytes: int, on_evict: Callable[[str, _Slot], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=lambda slot: slot.nbytes)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, _Slot]:
        key, slot = super().popitem()
        self._on_evict(key, slot)
        return key, slot


class MemoryTier:
    """An LRU of at most ``max_entries`` entries and ``max_bytes`` bytes (as ``CacheEntry.nbytes``).

    :param max_entries: evict least-recently-used entries beyond this count.
    :param max_bytes: evict least-recently-used entries beyond this many bytes; an entry larger than
        this on its own is not kept at all.
    :param ttl_s: an entry not read for this many seconds is dropped (each hit restarts the clock).
    :param clock: unix seconds; injectable so tests can move time without sleeping.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("max_entries, max_bytes and ttl_s must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._lru = _EvictingLRU(max_bytes, self._evicted)
        self._by_job: defaultdict[str, set[str]] = defaultdict(set)
        self._by_model: defaultdict[str, set[str]] = defaultdict(set)
        self._by_prompt: defaultdict[str, set[str]] = defaultdict(set)
        self.evictions = 0  # for capacity, since start
        self.expirations = 0

    def get(self, key: str) -> CacheEntry | None:
        """The entry, or None if absent or expired. A hit makes it most recent and restarts its TTL."""
        slot = self._lru.get(key)
        if slot is None:
            return None
        now = self._clock()
        if slot.expires_at <= now:
            self._remove(key)
            self.expirations += 1
            return None
        slot.expires_at = now + self.ttl_s
        return slot.entry

    def put(self, entry: CacheEntry) -> None:
        """Insert or replace ``entry``, evicting least-recently-used entries to stay within bounds."""
        self._remove(entry.key)
        nbytes = entry.nbytes()
        if nbytes > self.max_bytes:
            return
        self._lru[entry.key] = _Slot(entry, nbytes, self._clock() + self.ttl_s)
        self._index(entry, add=True)
        while len(self._lru) > self.max_entries:
            self._lru.popitem()

    def delete(self, key: str) -> bool:
        return self._remove(key)

    def keys_for_job(self, job_id: str) -> set[str]:
        return set(self._by_job.get(job_id, ()))

    def keys_for_model(self, model: str) -> set[str]:
        return set(self._by_model.get(model, ()))

    def keys_for_prompt(self, prompt_hash: str) -> set[str]:
        return set(self._by_prompt.get(prompt_hash, ()))

    def keys(self) -> set[str]:
        return set(self._lru.keys())

    def clear(self) -> int:
        """Drop everything; returns how many entries there were."""
        count = len(self._lru)
        # A fresh LRU rather than clear(): older cachetools clear through popitem, which counts evictions.
        self._lru = _EvictingLRU(self.max_bytes, self._evicted)
        self._by_job.clear()
        self._by_model.clear()
        self._by_prompt.clear()
        return count

    def __len__(self) -> int:
        """Entries held, including expired ones not yet touched (they go on access or eviction)."""
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return int(self._lru.currsize)

    def _remove(self, key: str) -> bool:
        slot = self._lru.pop(key, None)
        if slot is None:
            return False
        self._index(slot.entry, add=False)
        return True

    def _evicted(self, key: str, slot: _Slot) -> None:
        self.evictions += 1
        self._index(slot.entry, add=False)

    def _index(self, entry: CacheEntry, add: bool) -> None:
        for index, value in (
            (self._by_job, entry.job_id),
            (self._by_model, entry.model),
            (self._by_prompt, entry.prompt_hash),
        ):
            if add:
                index[value].add(entry.key)
            else:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(entry.key)
                    if not keys:
                        del index[value]
