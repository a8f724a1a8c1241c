"""The distributed mode's stats: every process adds to the same buckets in Redis, so the API process
(which runs no batches) reports what the workers did.

Keys (``reelserve.redis_names.StatsKeys``, under the namespace's hash tag, so one slot on a Cluster):
``stats:<bucket>`` a hash of counters (``completed``, ``failed``, ``cancelled``, ``cached``,
``batch:<size>``), ``stats:<bucket>:latency`` a list of end-to-end seconds (capped), both expiring
after the retention; ``stats:workers`` a hash of worker name → JSON status with the time it was written.
Recording never raises: a Redis outage loses counts, not jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis as redis_sync
import redis.asyncio as aioredis

from reelserve.redis_names import StatsKeys
from reelserve.schemas import Job
from reelserve.stats.base import (
    BUCKET_S,
    MAX_LATENCY_SAMPLES,
    RETENTION_S,
    STALE_AFTER_S,
    Bucket,
    WorkerStatus,
    bucket_of,
    job_fields,
)

log = logging.getLogger(__name__)
HEARTBEAT_S = 3.0
_LOOK_S = 0.25
FORGET_WORKER_S = 600.0  # a worker silent this long has gone (restarted under a new name, or scaled in)


class RedisStats:
    def __init__(
        self,
        sync_client: redis_sync.Redis,
        async_client: aioredis.Redis,
        names: StatsKeys,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sync, self._async, self._names, self._clock = sync_client, async_client, names, clock
        self._heartbeats: list[asyncio.Task[None]] = []
        self._closing = False

    def _key(self, start: int) -> str:
        return self._names.bucket(start)

    @property
    def _workers_key(self) -> str:
        return self._names.workers

    def job_finished(self, job: Job) -> None:
        counter, latency = job_fields(job)
        bucket = bucket_of(self._clock())
        key = self._key(bucket)
        pipe = self._sync.pipeline(transaction=False)
        pipe.hincrby(key, counter, 1)
        pipe.expire(key, RETENTION_S)
        if latency is not None:
            pipe.rpush(self._names.latencies(bucket), repr(latency))
            pipe.ltrim(self._names.latencies(bucket), 0, MAX_LATENCY_SAMPLES - 1)
            pipe.expire(self._names.latencies(bucket), RETENTION_S)
        self._send(pipe)

    def batch_ran(self, size: int) -> None:
        key = self._key(bucket_of(self._clock()))
        pipe = self._sync.pipeline(transaction=False)
        pipe.hincrby(key, f"batch:{size}", 1)
        pipe.expire(key, RETENTION_S)
        self._send(pipe)

    def register_worker(self, status: Callable[[], WorkerStatus]) -> None:
        self._heartbeats.append(asyncio.create_task(self._beat(status)))

    async def buckets(self, since: float) -> list[Bucket]:
        now = self._clock()
        since = max(since, now - RETENTION_S)  # older keys have expired (or are about to)
        starts = list(range(bucket_of(since), bucket_of(now) + BUCKET_S, BUCKET_S))
        pipe = self._async.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self._key(start))
            pipe.lrange(self._names.latencies(start), 0, -1)
        replies = await pipe.execute()
        found = []
        for i, start in enumerate(starts):
            counters, latencies = replies[2 * i], replies[2 * i + 1]
            if counters or latencies:
                found.append(_bucket(start, counters, latencies))
        return found

    async def workers(self) -> list[dict[str, Any]]:
        now = self._clock()
        listed, gone = [], []
        for name, raw in (await self._async.hgetall(self._workers_key)).items():
            status = json.loads(raw)
            idle = max(0.0, now - float(status.pop("at")))
            if idle > FORGET_WORKER_S:
                gone.append(name)
                continue
            if idle > STALE_AFTER_S:
                status["state"] = "stale"
            listed.append({**status, "last_seen_s": round(idle, 1)})
        if gone:
            await self._async.hdel(self._workers_key, *gone)
        return sorted(listed, key=lambda worker: worker["name"])

    async def close(self) -> None:
        self._closing = True
        for task in self._heartbeats:
            task.cancel()
        for task in self._heartbeats:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _beat(self, status: Callable[[], WorkerStatus]) -> None:
        """Write ``status()`` every ``HEARTBEAT_S``, and at once when it changes (looked at every
        ``_LOOK_S``): a worker that finished loading is not shown loading for seconds more."""
        name, written, written_at = "", None, 0.0
        try:
            while not self._closing:  # a flag too: redis-py can turn a cancel into a timeout, caught below
                current = status()
                name = current.name
                if current != written or time.monotonic() - written_at >= HEARTBEAT_S:
                    try:
                        await self._async.hset(
                            self._workers_key, name, json.dumps({**current.as_dict(), "at": self._clock()})
                        )
                        written, written_at = current, time.monotonic()
                    except Exception as exc:  # noqa: BLE001 - shown as stale until Redis answers again
                        log.warning("worker heartbeat to Redis failed: %s: %s", type(exc).__name__, exc)
                        written_at = time.monotonic()
                await asyncio.sleep(_LOOK_S)
        finally:  # a clean stop leaves the list at once
            if name:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._async.hdel(self._workers_key, name))

    def _send(self, pipe: Any) -> None:
        try:
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - stats are best effort; the job itself is saved
            log.warning("recording stats in Redis failed: %s: %s", type(exc).__name__, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bucket(start: int, counters: dict[Any, Any], latencies: list[Any]) -> Bucket:
    bucket = Bucket(start, latencies=[float(_text(v)) for v in latencies])
    for raw_field, raw_value in counters.items():
        name, value = _text(raw_field), int(_text(raw_value))
        if name.startswith("batch:"):
            bucket.batch_sizes[int(name.removeprefix("batch:"))] = value
        elif name in ("completed", "failed", "cancelled", "cached"):
            setattr(bucket, name, value)
    return bucket
