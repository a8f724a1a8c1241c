"""The embedded mode's stats: buckets in this process's memory (gone on restart, like the queue's view)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from reelserve.schemas import Job
from reelserve.stats.base import MAX_LATENCY_SAMPLES, RETENTION_S, Bucket, WorkerStatus, bucket_of, job_fields


class LocalStats:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[int, Bucket] = {}
        self._workers: list[Callable[[], WorkerStatus]] = []

    def job_finished(self, job: Job) -> None:
        counter, latency = job_fields(job)
        bucket = self._bucket()
        setattr(bucket, counter, getattr(bucket, counter) + 1)
        if latency is not None and len(bucket.latencies) < MAX_LATENCY_SAMPLES:
            bucket.latencies.append(latency)

    def batch_ran(self, size: int) -> None:
        self._bucket().batch_sizes[size] += 1

    def register_worker(self, status: Callable[[], WorkerStatus]) -> None:
        self._workers.append(status)

    async def buckets(self, since: float) -> list[Bucket]:
        since = max(since, self._clock() - RETENTION_S)
        return [bucket for start, bucket in sorted(self._buckets.items()) if start >= since]

    async def workers(self) -> list[dict[str, Any]]:
        return [{**status().as_dict(), "last_seen_s": 0.0} for status in self._workers]

    async def close(self) -> None:
        pass

    def _bucket(self) -> Bucket:
        start = bucket_of(self._clock())
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = Bucket(start)
            for old in [s for s in self._buckets if s < start - RETENTION_S]:
                del self._buckets[old]
        return bucket
