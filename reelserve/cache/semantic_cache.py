"""``SemanticCache``: the embedder, the in-process ``SemanticIndex`` and (with Redis) the ``SemanticStore``,
kept in step with a ``ResultCache``.

Each process holds its own index. Before answering for a signature it reconciles that signature's keys
with the store, so entries other processes saved are found and removed ones dropped, at one set read per
lookup (plus the records it lacks). Without Redis, or while Redis is down, the local index answers alone.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from reelserve.cache.embedder import PromptEmbedder
from reelserve.cache.key import normalise_prompt
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic import SemanticIndex, SemanticMatch, SemanticStore

log = logging.getLogger(__name__)


class SemanticCache:
    """
    :param cache: the result cache whose entries are indexed; its Redis outage handling guards the store.
        The semantic cache registers itself as the cache's ``removal_listener``.
    :param embedder: turns prompts into vectors; loaded on its first use, never at construction.
    :param store: records on the cache's Redis, shared between processes; None keeps them in this process.
    """

    def __init__(self, cache: ResultCache, embedder: PromptEmbedder, store: SemanticStore | None = None) -> None:
        self.cache = cache
        self.embedder = embedder
        self.store = store
        self.index = SemanticIndex()
        cache.removal_listener = self

    async def embed(self, prompt: str) -> np.ndarray | None:
        """The prompt's vector, computed in a worker thread; None (logged) if the embedder fails."""
        try:
            vectors = await asyncio.to_thread(self.embedder.embed, [prompt])
        except Exception as exc:  # noqa: BLE001 - the semantic cache is optional; a failure is a miss
            # The error type only: a tokenizer's message may quote the prompt.
            log.error("semantic cache: embedding failed (%s); skipping the semantic cache", type(exc).__name__)
            return None
        return vectors[0]

    async def best(self, signature: str, vector: np.ndarray, min_similarity: float) -> SemanticMatch | None:
        """The closest indexed prompt of ``signature`` at ``min_similarity`` or above, or None."""
        await self._sync(signature)
        return self.index.best(signature, vector, min_similarity)

    async def add(self, signature: str, key: str, prompt: str, vector: np.ndarray) -> None:
        """Index ``key``'s prompt here and, when there is a store, for every process."""
        normalised = normalise_prompt(prompt)
        if self.store is not None:
            store = self.store
            await self.cache.redis_call(
                "semantic_save", lambda _: store.save(signature, key, normalised, vector), None
            )
        self.index.add(signature, key, normalised, vector)

    async def touch(self, key: str) -> None:
        """Keep ``key``'s record alive as long as its entry: call on every hit of ``key``."""
        if self.store is not None:
            store = self.store
            await self.cache.redis_call("semantic_touch", lambda _: store.touch(key), False)

    async def removed(self, keys: set[str]) -> None:
        for key in keys:
            self.index.remove(key)
        if self.store is not None:
            store = self.store
            for key in keys:
                await self.cache.redis_call("semantic_delete", lambda _, k=key: store.delete(k), False)

    async def flushed(self) -> None:
        # The records in Redis went with the flush: they live under the cache's prefix.
        self.index.clear()

    def __len__(self) -> int:
        return len(self.index)

    async def _sync(self, signature: str) -> None:
        if self.store is None:
            return
        store = self.store
        stored = await self.cache.redis_call("semantic_keys", lambda _: store.keys_for_signature(signature), None)
        if stored is None:
            return  # Redis unavailable: answer from the local index
        local = self.index.keys(signature)
        for key in local - stored:
            self.index.remove(key)
        missing = stored - local
        if not missing:
            return
        for record in await self.cache.redis_call("semantic_read", lambda _: store.read(missing), []):
            try:
                self.index.add(record.signature, record.key, record.prompt, record.vector)
            except ValueError as error:  # e.g. saved by another embedding model
                log.warning("semantic cache: record %s not indexed: %s", record.key, error)
