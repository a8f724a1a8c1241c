"""Both stats recorders against the same expectations: LocalStats in memory, RedisStats on a real
private redis-server (several recorders sharing it, as API and worker processes do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import FakeClock, RedisServer, eventually

from reelserve.schemas import GenerationParams, Job, JobStatus, Timings
from reelserve.redis_names import StatsKeys
from reelserve.stats import BUCKET_S, LocalStats, RedisStats, StatsRecorder, WorkerStatus, summarize
from reelserve.stats.base import RETENTION_S, STALE_AFTER_S

PARAMS = GenerationParams(
    model="tiny", prompt="a red fox", width=64, height=64, num_frames=9, fps=8,
    num_inference_steps=2, guidance_scale=5.0, seed=1,
)
PREFIX = "{reelserve-test}:"


def final(status: JobStatus, total_s: float | None = None, cached: bool = False) -> Job:
    return Job(id="video_x", params=PARAMS, status=status, cached=cached, timings=Timings(total_s=total_s))


Factory = Callable[[FakeClock], StatsRecorder]


@pytest.fixture(params=["local", "redis"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Recorders under test; with Redis, every one made shares the same server and namespace."""
    if request.param == "local":
        shared: dict[str, LocalStats] = {}

        def local(clock: FakeClock) -> StatsRecorder:  # one process: every "recorder" is the same
            return shared.setdefault("one", LocalStats(clock))

        yield local
        return
    server = RedisServer(tmp_path / "redis")
    server.start()
    made: list[RedisStats] = []
    clients: list[tuple[redis.Redis, aioredis.Redis]] = []

    def remote(clock: FakeClock) -> StatsRecorder:
        pair = (redis.Redis(port=server.port), aioredis.Redis(port=server.port))
        clients.append(pair)
        made.append(RedisStats(*pair, StatsKeys(PREFIX), clock))
        return made[-1]

    try:
        yield remote
    finally:
        for recorder in made:
            await recorder.close()
        for sync_client, async_client in clients:
            sync_client.close()
            await async_client.aclose()
        server.stop()


async def test_counts_final_jobs_and_batches_into_the_bucket_of_their_time(make: Factory) -> None:
    clock = FakeClock(10_000.0)
    api, worker = make(clock), make(clock)
    worker.job_finished(final(JobStatus.completed, 2.0))
    worker.job_finished(final(JobStatus.completed, 4.0))
    api.job_finished(final(JobStatus.completed, 0.01, cached=True))
    api.job_finished(final(JobStatus.cancelled))
    worker.job_finished(final(JobStatus.failed))
    worker.batch_ran(2)
    worker.batch_ran(2)
    clock.advance(BUCKET_S)
    worker.batch_ran(1)
    worker.job_finished(final(JobStatus.completed, 6.0))

    buckets = await api.buckets(since=9_000.0)
    assert [b.start for b in buckets] == [10_000, 10_010]
    first, second = buckets
    assert (first.completed, first.cached, first.cancelled, first.failed) == (2, 1, 1, 1)
    assert sorted(first.latencies) == [2.0, 4.0]  # a cache hit's 0.01 s is not a generation latency
    assert dict(first.batch_sizes) == {2: 2} and dict(second.batch_sizes) == {1: 1}
    assert second.latencies == [6.0]
    assert await api.buckets(since=10_010.0) == [second]


async def test_summary_over_a_window_from_recorded_jobs(make: Factory) -> None:
    clock = FakeClock(20_000.0)
    recorder = make(clock)
    for seconds in (1.0, 2.0, 3.0, 4.0):
        recorder.job_finished(final(JobStatus.completed, seconds))
    recorder.job_finished(final(JobStatus.completed, 0.0, cached=True))
    clock.advance(30)
    recorder.job_finished(final(JobStatus.completed, 10.0))
    summary = summarize(await recorder.buckets(clock() - 60), clock(), window_s=60, step_s=30)
    totals = summary["totals"]
    assert totals["completed"] == 6 and totals["cached"] == 1
    assert totals["cache_hit_rate"] == pytest.approx(1 / 6)
    assert totals["throughput_per_min"] == pytest.approx(6.0)
    assert (totals["p50_s"], totals["p95_s"]) == (3.0, 10.0)
    assert [p["completed"] for p in summary["series"]] == [5, 1]
    assert [p["p95_s"] for p in summary["series"]] == [4.0, 10.0]


async def test_old_buckets_are_dropped_after_the_retention(make: Factory) -> None:
    clock = FakeClock(50_000.0)
    recorder = make(clock)
    recorder.job_finished(final(JobStatus.failed))
    clock.advance(RETENTION_S + BUCKET_S)
    recorder.job_finished(final(JobStatus.failed))
    assert [b.start for b in await recorder.buckets(since=0)] == [50_000 + RETENTION_S + BUCKET_S]


async def test_workers_report_their_state_to_every_reader(make: Factory) -> None:
    clock = FakeClock(70_000.0)
    reader, worker = make(clock), make(clock)
    state = {"value": "loading"}
    worker.register_worker(lambda: WorkerStatus("w1", "tiny", state["value"], 0))

    async def seen(expected: str) -> bool:
        return [(w["name"], w["state"]) for w in await reader.workers()] == [("w1", expected)]

    await eventually(lambda: seen("loading"))
    state["value"] = "busy"
    await eventually(lambda: seen("busy"), timeout=10)


async def test_a_silent_worker_is_shown_stale_then_forgotten(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    sync_client, async_client = redis.Redis(port=server.port), aioredis.Redis(port=server.port)
    try:
        clock = FakeClock(80_000.0)
        worker, reader = RedisStats(sync_client, async_client, StatsKeys(PREFIX), clock), RedisStats(
            sync_client, async_client, StatsKeys(PREFIX), clock
        )
        worker.register_worker(lambda: WorkerStatus("w1", "tiny", "idle", 0))
        await eventually(lambda: _names(reader))
        # The worker's process dies without a clean stop: its heartbeat task just ends.
        for task in worker._heartbeats:
            task.cancel()
        await asyncio.gather(*worker._heartbeats, return_exceptions=True)
        sync_client.hset(f"{PREFIX}stats:workers", "w2", '{"name": "w2", "model": "tiny", "state": "busy", '
                         f'"running": 1, "at": {clock()}}}')
        clock.advance(STALE_AFTER_S + 1)
        workers = {w["name"]: w for w in await reader.workers()}
        assert workers["w2"]["state"] == "stale" and workers["w2"]["last_seen_s"] == pytest.approx(STALE_AFTER_S + 1)
        clock.advance(3600)
        assert await reader.workers() == []
        assert sync_client.hlen(f"{PREFIX}stats:workers") == 0
    finally:
        sync_client.close()
        await async_client.aclose()
        server.stop()


async def _names(recorder: RedisStats) -> list[str]:
    return [w["name"] for w in await recorder.workers()]


async def test_recording_never_raises_when_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    port = server.port
    server.stop()
    no_retries = {"socket_connect_timeout": 0.2, "retry": Retry(NoBackoff(), 0)}
    sync_client = redis.Redis(port=port, **no_retries)  # type: ignore[arg-type]
    async_client = aioredis.Redis(port=port, retry=AsyncRetry(NoBackoff(), 0), socket_connect_timeout=0.2)
    try:
        recorder = RedisStats(sync_client, async_client, StatsKeys(PREFIX))
        recorder.job_finished(final(JobStatus.completed, 1.0))  # logged and dropped: the job is saved elsewhere
        recorder.batch_ran(3)
        with pytest.raises(redis.exceptions.ConnectionError):  # reading is the API's, which answers 503
            await recorder.buckets(since=0)
    finally:
        sync_client.close()
        await async_client.aclose()
