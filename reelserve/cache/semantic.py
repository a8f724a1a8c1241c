"""The semantic index: among cached prompts with the same output signature, the one closest in meaning to
a new prompt; and ``SemanticStore``, its records in Redis, from which a new process rebuilds it.

Only entries with an identical signature (``signature_hash``: every parameter but the prompt, seed and
cache scope included) can match, so a semantic hit may change the wording, never the size, seed, model
or tenant. Similarity is cosine: the dot product of L2-normalised vectors, one numpy matrix per
signature. A brute-force scan of a few thousand 384-float rows takes well under a millisecond; no vector
database is needed at this scale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import redis.asyncio as aioredis

from reelserve.cache.redis_tier import DEFAULT_PREFIX, DEFAULT_TTL_S
from reelserve.redis_names import CacheKeys

log = logging.getLogger(__name__)

_INITIAL_ROWS = 8


class SemanticMatch(NamedTuple):
    key: str  # the cache key of the matched entry
    prompt: str  # its normalised prompt
    similarity: float  # cosine, in [-1, 1]


class _SignatureGroup:
    """The entries of one signature: row i of ``matrix`` is the vector of ``keys[i]``. The matrix grows by
    doubling and a removal moves the last row into the hole, so both are O(dim)."""

    def __init__(self, dim: int) -> None:
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self.matrix = np.empty((_INITIAL_ROWS, dim), dtype=np.float32)

    def append(self, key: str, prompt: str, vector: np.ndarray) -> int:
        row = len(self.keys)
        if row == len(self.matrix):
            grown = np.empty((2 * row, self.matrix.shape[1]), dtype=np.float32)
            grown[:row] = self.matrix
            self.matrix = grown
        self.matrix[row] = vector
        self.keys.append(key)
        self.prompts.append(prompt)
        return row

    def pop(self, row: int) -> str | None:
        """Remove ``row``; returns the key that moved into it, if one did."""
        last = len(self.keys) - 1
        moved = None
        if row != last:
            self.matrix[row] = self.matrix[last]
            self.keys[row] = self.keys[last]
            self.prompts[row] = self.prompts[last]
            moved = self.keys[row]
        self.keys.pop()
        self.prompts.pop()
        return moved

    def nearest(self, vector: np.ndarray) -> tuple[int, float]:
        scores = self.matrix[: len(self.keys)] @ vector
        row = int(np.argmax(scores))
        return row, float(scores[row])


class SemanticIndex:
    """In-process nearest-prompt lookup, split by signature. Safe to use from several threads.

    It knows nothing of expiry: a match whose cache entry has gone is the caller's to ``remove``.

    :param dim: vector length; if None, set by the first ``add`` (and forgotten by ``clear``).
    """

    def __init__(self, dim: int | None = None) -> None:
        self._configured_dim = dim
        self._dim = dim
        self._groups: dict[str, _SignatureGroup] = {}
        self._where: dict[str, tuple[str, int]] = {}  # key -> (signature, row)
        self._lock = threading.Lock()

    def add(self, signature: str, key: str, prompt: str, vector: np.ndarray) -> None:
        """Index ``key``, replacing any earlier vector for it. ``vector`` is normalised here, so any
        non-zero vector will do. Raises ``ValueError`` for a wrong length, a zero or a non-finite vector."""
        with self._lock:
            if self._dim is None:
                self._dim = int(np.asarray(vector).size)
            unit = _unit(vector, self._dim)
            self._remove(key)
            group = self._groups.get(signature)
            if group is None:
                group = self._groups[signature] = _SignatureGroup(self._dim)
            self._where[key] = (signature, group.append(key, prompt, unit))

    def remove(self, key: str) -> bool:
        """Forget ``key``; False if it was not indexed."""
        with self._lock:
            return self._remove(key)

    def best(self, signature: str, vector: np.ndarray, min_similarity: float) -> SemanticMatch | None:
        """The entry of ``signature`` most similar to ``vector``, if its similarity is at least
        ``min_similarity``; None otherwise, or when nothing has that signature."""
        with self._lock:
            group = self._groups.get(signature)
            if group is None or self._dim is None:
                return None
            row, similarity = group.nearest(_unit(vector, self._dim))
            if similarity < min_similarity:
                return None
            return SemanticMatch(group.keys[row], group.prompts[row], similarity)

    def keys(self, signature: str) -> set[str]:
        """The keys indexed under ``signature``."""
        with self._lock:
            group = self._groups.get(signature)
            return set(group.keys) if group is not None else set()

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
            self._where.clear()
            self._dim = self._configured_dim

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def _remove(self, key: str) -> bool:
        place = self._where.pop(key, None)
        if place is None:
            return False
        signature, row = place
        group = self._groups[signature]
        moved = group.pop(row)
        if moved is not None:
            self._where[moved] = (signature, row)
        if not group.keys:
            del self._groups[signature]
        return True


def _unit(vector: np.ndarray, dim: int) -> np.ndarray:
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    if flat.size != dim:
        raise ValueError(f"vector has {flat.size} values, the index holds {dim}")
    norm = float(np.linalg.norm(flat))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("vector must be finite and non-zero")
    return flat / norm


@dataclass(frozen=True)
class SemanticRecord:
    signature: str
    key: str
    prompt: str  # normalised
    vector: np.ndarray  # float32


class SemanticStore:
    """Semantic records in Redis: a hash per cache key (signature, prompt, float32 vector bytes) and a set
    of keys per signature, both with the cache's TTL.

    :param client: a ``redis.asyncio.Redis`` that returns bytes (``decode_responses=False``, the default):
        vectors are stored as raw bytes.
    :param ttl_s: a record not saved or touched for this long expires, like its cache entry.
    :param prefix: the cache's namespace; ``RedisTier.flush`` under the same prefix removes these too.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int = DEFAULT_TTL_S, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)
        self.names = CacheKeys(prefix)

    async def save(self, signature: str, key: str, prompt: str, vector: np.ndarray) -> None:
        """Write (or replace) the record of ``key``; ``prompt`` should already be normalised."""
        data = np.asarray(vector, dtype="<f4").reshape(-1).tobytes()
        record = self.names.semantic(key)
        members = self.names.semantic_by_signature(signature)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(record, mapping={"signature": signature, "prompt": prompt, "vector": data})
            pipe.expire(record, self.ttl_s)
            pipe.sadd(members, key)
            pipe.expire(members, self.ttl_s)
            await pipe.execute()

    async def touch(self, key: str) -> bool:
        """Restart the TTL of ``key``'s record and its signature set, as a cache hit restarts the entry's;
        False if the record is gone."""
        signature = await self.client.hget(self.names.semantic(key), "signature")
        if signature is None:
            return False
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.expire(self.names.semantic(key), self.ttl_s)
            pipe.expire(self.names.semantic_by_signature(_text(signature)), self.ttl_s)
            alive, _ = await pipe.execute()
        return bool(alive)

    async def delete(self, key: str) -> bool:
        """Remove ``key``'s record and its set membership; False if there was no record."""
        signature = await self.client.hget(self.names.semantic(key), "signature")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.names.semantic(key))
            if signature is not None:
                pipe.srem(self.names.semantic_by_signature(_text(signature)), key)
            results = await pipe.execute()
        return bool(results[0])

    async def keys_for_signature(self, signature: str) -> set[str]:
        """Keys saved under ``signature``; may list a key whose record has since expired."""
        return {_text(m) for m in await self.client.smembers(self.names.semantic_by_signature(signature))}

    async def read(self, keys: Iterable[str]) -> list[SemanticRecord]:
        """The records of ``keys`` whose cache entry still exists; absent or unreadable ones are left out."""
        return await self._read(list(keys))

    async def load_all(self, batch: int = 500) -> AsyncIterator[SemanticRecord]:
        """Every record whose cache entry still exists, by SCAN; unreadable records are skipped with a
        warning. Records of entries that are gone (expired or invalidated) are skipped, not deleted:
        their own TTL removes them, and a record saved just before its entry must not be lost."""
        skip = len(self.names.semantic(""))
        names: list[str] = []
        async for name in self.client.scan_iter(match=self.names.semantic_pattern, count=1000):
            names.append(_text(name))
            if len(names) >= batch:
                for record in await self._read([n[skip:] for n in names]):
                    yield record
                names.clear()
        if names:
            for record in await self._read([n[skip:] for n in names]):
                yield record

    async def restore(self, index: SemanticIndex) -> int:
        """Clear ``index`` and fill it from Redis; returns how many entries it now holds."""
        index.clear()
        async for record in self.load_all():
            try:
                index.add(record.signature, record.key, record.prompt, record.vector)
            except ValueError as error:  # e.g. saved by another embedding model
                log.warning("semantic cache: record %s not indexed: %s", record.key, error)
        return len(index)

    async def _read(self, keys: list[str]) -> list[SemanticRecord]:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.names.semantic(key))
                pipe.exists(self.names.entry(key))
            results = await pipe.execute()
        records = []
        for key, fields, entry_exists in zip(keys, results[::2], results[1::2], strict=True):
            if not fields or not entry_exists:
                continue
            try:
                records.append(_record(key, fields))
            except (KeyError, ValueError):
                log.warning("semantic cache: unreadable record %s in redis, skipped", key)
        return records


def _record(key: str, fields: dict[bytes, bytes]) -> SemanticRecord:
    raw = {_text(name): value for name, value in fields.items()}
    if len(raw["vector"]) % 4:
        raise ValueError("vector bytes are not float32")
    vector = np.frombuffer(raw["vector"], dtype="<f4").astype(np.float32)
    return SemanticRecord(_text(raw["signature"]), key, _text(raw["prompt"]), vector)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
