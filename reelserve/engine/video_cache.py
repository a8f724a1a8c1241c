"""``VideoCache``: how the engine uses the result cache. A submitted request either becomes a completed copy
of a video made before (a hit) or a queued job that carries its cache key, stored when it completes.

A hit job is a job of its own: a new id, its own copies of the video and thumbnail (``Storage.copy``, a
hard link on local disk), so deleting the job it came from never breaks it. Nothing here raises for a
cache failure: a Redis outage, a vanished source file or a failing embedder all mean "run the job".
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from cachetools import LRUCache

from reelserve.cache.entry import CacheEntry, Hit
from reelserve.cache.key import normalise_prompt, prompt_hash
from reelserve.cache.policy import CacheDecision, CachePolicy
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache
from reelserve.engine.storage_keys import job_prefix, thumbnail_key, video_key
from reelserve.metrics import Metrics
from reelserve.schemas import GenerationParams, Job, JobStatus, VideoCreateRequest
from reelserve.schemas.tenants import ANONYMOUS_TENANT
from reelserve.storage.base import Storage

log = logging.getLogger(__name__)

_SEMANTIC_ATTEMPTS = 3  # matches whose entry has gone meanwhile are dropped and the next best tried
_PENDING_VECTORS = 10_000  # prompt vectors kept from lookup to completion (1.5 KB each)


class VideoCache:
    """
    :param cache: the result cache; None runs every request (the policy still flags sensitive prompts).
    :param semantic: semantic matching; None answers exact keys only.
    :param policy: decides keys and who may use the cache; None turns caching off.
    """

    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        cache: ResultCache | None = None,
        semantic: SemanticCache | None = None,
        policy: CachePolicy | None = None,
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.cache = cache
        self.semantic = semantic
        self.policy = policy
        # The vector a semantic lookup computed, kept for indexing the job once it completes.
        self._vectors: LRUCache[str, np.ndarray] = LRUCache(maxsize=_PENDING_VECTORS)

    async def new_job(self, request: VideoCreateRequest, params: GenerationParams, tenant: str | None) -> Job:
        """A completed copy of a cached video (``job.cached``), or else a queued job to run."""
        decision = self.policy.decide(request, params, tenant) if self.policy is not None else None
        if decision is None or decision.key is None or self.cache is None:
            return Job(params=params, sensitive=decision is not None and decision.sensitive)
        hit = await self.cache.lookup(decision.key)
        if hit is not None:
            job = await self._copy_of(hit, params, tenant)
            if job is not None:
                return job
        job = Job(
            params=params, cache_key=decision.key, cache_signature=decision.signature,
            cache_semantic=decision.semantic,
        )
        if decision.semantic and self.semantic is not None:
            copy = await self._semantic_copy(job, decision, tenant)
            if copy is not None:
                return copy
        return job

    def keeps(self, job: Job) -> bool:
        """Whether ``remember`` stores anything for ``job``."""
        return self.cache is not None and job.cache_key is not None

    async def remember(self, job: Job) -> None:
        """Store a just-completed job's result under its cache key (and its prompt in the semantic index)."""
        if not self.keeps(job) or job.video_key is None:
            return
        assert self.cache is not None and job.cache_key is not None
        try:
            size = await asyncio.to_thread(self.storage.size, job.video_key)
        except FileNotFoundError:
            return
        batch = job.batch_size or 1
        await self.cache.store(
            CacheEntry(
                key=job.cache_key,
                job_id=job.id,
                video_key=job.video_key,
                thumbnail_key=job.thumbnail_key,
                size=size,
                created=job.completed_at or time.time(),
                model=job.params.model,
                prompt_hash=prompt_hash(job.params.prompt),
                signature=job.cache_signature or "",
                model_seconds=(job.timings.inference_s or 0.0) / batch,  # a batch's time is shared by its rows
                prompt=normalise_prompt(job.params.prompt),
                tenant=job.tenant or ANONYMOUS_TENANT,
            )
        )
        if self.semantic is not None and job.cache_semantic and job.cache_signature:
            vector = self._vectors.pop(job.id, None)
            if vector is None:  # e.g. the job was re-queued by a restart
                vector = await self.semantic.embed(job.params.prompt)
            if vector is not None:
                await self.semantic.add(job.cache_signature, job.cache_key, job.params.prompt, vector)

    async def forget(self, job: Job) -> None:
        """Take back what ``remember`` stored for a run whose job ended otherwise (cancelled or deleted
        meanwhile, or finished by another run): its files are about to go."""
        if self.keeps(job) and job.video_key is not None:
            assert self.cache is not None and job.cache_key is not None
            await self.cache.drop_entry(job.cache_key, job.video_key)

    async def drop_job(self, job_id: str) -> None:
        """Forget every entry whose video is ``job_id``'s: call before deleting its files."""
        self._vectors.pop(job_id, None)
        if self.cache is not None:
            await self.cache.drop_job(job_id)

    # -- CacheAdmin ---------------------------------------------------------------------------

    async def cache_stats(self) -> dict[str, object]:
        if self.cache is None:
            return {"enabled": False}
        sample = self.metrics.registry.get_sample_value
        return {
            "enabled": True,
            **await self.cache.stats(),
            "semantic": {
                "enabled": self.semantic is not None,
                "indexed": len(self.semantic) if self.semantic is not None else 0,
                **{
                    result: sample("reelserve_cache_semantic_requests_total", {"result": result}) or 0.0
                    for result in ("hit", "miss")
                },
            },
        }

    async def invalidate_key(self, key: str) -> int:
        return await self.cache.invalidate_key(key) if self.cache is not None else 0

    async def invalidate_prompt(self, prompt: str) -> int:
        return await self.cache.invalidate_prompt(prompt) if self.cache is not None else 0

    async def invalidate_model(self, model: str) -> int:
        return await self.cache.invalidate_model(model) if self.cache is not None else 0

    async def flush(self) -> int:
        return await self.cache.flush() if self.cache is not None else 0

    # -- hits ---------------------------------------------------------------------------------

    async def _semantic_copy(self, job: Job, decision: CacheDecision, tenant: str | None) -> Job | None:
        assert self.semantic is not None and self.cache is not None
        vector = await self.semantic.embed(job.params.prompt)
        if vector is None:
            return None
        self._vectors[job.id] = vector
        for _ in range(_SEMANTIC_ATTEMPTS):
            match = await self.semantic.best(decision.signature, vector, decision.min_similarity)
            if match is None:
                break
            hit = await self.cache.lookup(match.key)
            if hit is None:  # expired or invalidated since it was indexed
                await self.semantic.removed({match.key})
                continue
            copy = await self._copy_of(
                Hit(hit.entry, hit.level, similarity=match.similarity, matched_prompt=match.prompt), job.params, tenant
            )
            if copy is not None:
                self._vectors.pop(job.id, None)
                self.metrics.cache_semantic_requests.labels(result="hit").inc()
                return copy
        self.metrics.cache_semantic_requests.labels(result="miss").inc()
        return None

    async def _copy_of(self, hit: Hit, params: GenerationParams, tenant: str | None) -> Job | None:
        """A completed job holding its own copy of ``hit``'s files; None (a miss) if they cannot be copied.
        The source job's id and prompt are shown only to the tenant that made it."""
        assert self.cache is not None
        entry = hit.entry
        own = entry.tenant == (tenant or ANONYMOUS_TENANT)
        job = Job(
            params=params, status=JobStatus.completed, progress=100, cached=True,
            cache_source_id=entry.job_id if own else None, cache_similarity=hit.similarity,
            cache_matched_prompt=hit.matched_prompt if own else None,
        )
        job.video_key = video_key(job.id)
        job.thumbnail_key = thumbnail_key(job.id) if entry.thumbnail_key else None
        try:
            await asyncio.to_thread(self._copy_files, entry, job)
        except OSError as exc:
            await asyncio.to_thread(self.storage.delete_prefix, job_prefix(job.id))
            if isinstance(exc, FileNotFoundError):  # the source job's files were deleted: the entry is stale
                log.info("cache: files of %s are gone; dropping its cache entry", entry.job_id)
                await self.cache.invalidate_key(entry.key)
            else:
                log.warning("cache: could not copy the files of %s (%s); running the job instead",
                            entry.job_id, type(exc).__name__)
            return None
        if self.semantic is not None:
            await self.semantic.touch(entry.key)
        job.completed_at = time.time()
        job.timings.total_s = job.completed_at - job.created_at
        return job

    def _copy_files(self, entry: CacheEntry, job: Job) -> None:
        assert job.video_key is not None
        self.storage.copy(entry.video_key, job.video_key)
        if entry.thumbnail_key is not None and job.thumbnail_key is not None:
            try:
                self.storage.copy(entry.thumbnail_key, job.thumbnail_key)
            except FileNotFoundError:  # never asked for, so never made: this job makes its own when asked
                pass
