"""ResultCache against a real redis-server: tiers, TTL refresh, bloom filter, pub/sub sync, invalidation,
and a Redis that goes away mid-test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support import RedisServer, eventually

from reelserve.cache import CacheEntry, MemoryTier, ResultCache, prompt_hash, redis_tier_from_url
from reelserve.cache.redis_tier import DEFAULT_PREFIX
from reelserve.metrics import Metrics

MakeCache = Callable[..., Awaitable[ResultCache]]


def entry(key: str, job_id: str = "job-1", model: str = "tiny", prompt: str = "a cat") -> CacheEntry:
    return CacheEntry(
        key=key,
        job_id=job_id,
        video_key=f"videos/{job_id}.mp4",
        thumbnail_key=f"thumbs/{job_id}.jpg",
        size=2048,
        created=1_700_000_000.0,
        model=model,
        prompt_hash=prompt_hash(prompt),
        signature="sig",
        model_seconds=12.5,
        prompt=prompt,
    )


@pytest.fixture
async def make_cache(redis_server: RedisServer) -> AsyncIterator[MakeCache]:
    """Builds ResultCaches (each as if in its own process: own L1, client, metrics) on the test's Redis."""
    caches: list[ResultCache] = []

    async def make(ttl_s: int = 3600, start: bool = True, use_bloom: bool = True) -> ResultCache:
        cache = ResultCache(
            MemoryTier(),
            redis_tier_from_url(redis_server.url, ttl_s=ttl_s),
            metrics=Metrics(),
            use_bloom=use_bloom,
            retry_after_s=0.05,
        )
        caches.append(cache)
        if start:
            await cache.start()
        return cache

    yield make
    for cache in caches:
        await cache.close()


def sample(cache: ResultCache, name: str, **labels: str) -> float:
    return cache.metrics.registry.get_sample_value(name, labels) or 0.0


def requests(cache: ResultCache, level: str, result: str) -> float:
    return sample(cache, "reelserve_cache_requests_total", level=level, result=result)


def script_calls(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


async def test_store_then_l1_hit(make_cache: MakeCache) -> None:
    cache = await make_cache()
    await cache.store(entry("k1"))
    hit = await cache.lookup("k1")
    assert hit is not None and hit.level == "l1" and hit.entry == entry("k1")
    assert hit.similarity is None and hit.matched_prompt is None
    assert requests(cache, "l1", "hit") == 1
    assert sample(cache, "reelserve_cache_model_seconds_saved_total") == 12.5
    assert sample(cache, "reelserve_cache_hit_seconds_count") == 1
    assert sample(cache, "reelserve_cache_entries", level="l1") == 1
    assert sample(cache, "reelserve_cache_bytes", level="l1") == entry("k1").nbytes()


async def test_redis_holds_metadata_and_indexes_with_ttls(make_cache: MakeCache, redis_server: RedisServer) -> None:
    cache = await make_cache(ttl_s=500)
    await cache.store(entry("k1"))
    with redis_server.client() as client:
        stored = {k.decode(): v.decode() for k, v in client.hgetall(f"{DEFAULT_PREFIX}entry:k1").items()}
        assert stored == entry("k1").to_redis()
        for index in ("by-model:tiny", f"by-prompt:{prompt_hash('a cat')}", "by-job:job-1"):
            assert client.smembers(DEFAULT_PREFIX + index) == {b"k1"}
            assert 0 < client.ttl(DEFAULT_PREFIX + index) <= 500
    assert 0 < (await cache.redis.ttl("k1")) <= 500  # type: ignore[union-attr]


async def test_second_instance_hits_l2_then_l1(make_cache: MakeCache) -> None:
    first = await make_cache()
    await first.store(entry("k1"))
    second = await make_cache()
    assert len(second.memory) == 0
    hit = await second.lookup("k1")
    assert hit is not None and hit.level == "l2" and hit.entry == entry("k1")
    hit = await second.lookup("k1")
    assert hit is not None and hit.level == "l1"
    assert requests(second, "l1", "miss") == 1
    assert requests(second, "l2", "hit") == 1
    assert requests(second, "l1", "hit") == 1
    assert sample(second, "reelserve_cache_model_seconds_saved_total") == 25.0


async def test_a_hit_restarts_the_redis_ttl(make_cache: MakeCache, redis_server: RedisServer) -> None:
    writer = await make_cache(ttl_s=100)
    await writer.store(entry("k1"))
    model_index = f"{DEFAULT_PREFIX}by-model:tiny"
    with redis_server.client() as client:
        # Age the entry and its index instead of sleeping: 5 s left.
        client.pexpire(f"{DEFAULT_PREFIX}entry:k1", 5000)
        client.pexpire(model_index, 5000)
        reader = await make_cache(ttl_s=100)
        hit = await reader.lookup("k1")  # L2 hit: the Lua script reads and extends in one step
        assert hit is not None and hit.level == "l2"
        assert 95 < (await reader.redis.ttl("k1")) <= 100  # type: ignore[union-attr, operator]
        assert 95 < client.ttl(model_index) <= 100  # so invalidation by model still finds it

        client.pexpire(f"{DEFAULT_PREFIX}entry:k1", 5000)
        hit = await reader.lookup("k1")  # L1 hit: the TTL is extended by a background touch
        assert hit is not None and hit.level == "l1"
        await eventually(lambda: client.ttl(f"{DEFAULT_PREFIX}entry:k1") > 95)


async def test_bloom_filter_answers_misses_without_redis(make_cache: MakeCache, redis_server: RedisServer) -> None:
    cache = await make_cache()
    await cache.store(entry("k1"))
    before = script_calls(redis_server)
    assert await cache.lookup("never-stored") is None
    assert sample(cache, "reelserve_cache_bloom_negatives_total") == 1
    assert requests(cache, "l2", "miss") == 0
    assert script_calls(redis_server) == before  # Redis was not asked

    cache.memory.clear()
    hit = await cache.lookup("k1")  # the filter lets a stored key through to Redis
    assert hit is not None and hit.level == "l2"
    assert script_calls(redis_server) > before


async def test_bloom_filter_is_bypassed_until_started_or_when_disabled(make_cache: MakeCache) -> None:
    writer = await make_cache()
    await writer.store(entry("k1"))
    # Not started: its (empty) filter does not mirror Redis yet, so trusting it would lose this hit.
    unstarted = await make_cache(start=False)
    hit = await unstarted.lookup("k1")
    assert hit is not None and hit.level == "l2"
    no_bloom = await make_cache(use_bloom=False)
    assert no_bloom.bloom is None
    assert await no_bloom.lookup("never-stored") is None
    assert requests(no_bloom, "l2", "miss") == 1


async def test_start_builds_the_filter_from_existing_keys(make_cache: MakeCache) -> None:
    writer = await make_cache()
    for i in range(50):
        await writer.store(entry(f"k{i}", job_id=f"job-{i}"))
    reader = await make_cache()
    assert reader.bloom is not None
    assert all(reader.bloom.might_contain(f"k{i}") for i in range(50))
    hit = await reader.lookup("k7")
    assert hit is not None and hit.level == "l2"


async def test_add_event_reaches_another_instances_filter(make_cache: MakeCache) -> None:
    reader = await make_cache()
    writer = await make_cache()
    assert await reader.lookup("k1") is None
    assert sample(reader, "reelserve_cache_bloom_negatives_total") == 1  # the filter did rule it out
    await writer.store(entry("k1"))
    assert reader.bloom is not None
    await eventually(lambda: reader.bloom.might_contain("k1"))  # type: ignore[union-attr]
    hit = await reader.lookup("k1")
    assert hit is not None and hit.level == "l2"


async def invalidate(cache: ResultCache, how: str) -> int:
    if how == "key":
        return await cache.invalidate_key("k1")
    if how == "prompt":
        return await cache.invalidate_prompt("  A CAT! ")  # normalised like the stored prompt
    if how == "model":
        return await cache.invalidate_model("tiny")
    return await cache.drop_job("job-1")


@pytest.mark.parametrize("how", ["key", "prompt", "model", "job"])
async def test_invalidation_reaches_both_tiers_and_other_instances(
    make_cache: MakeCache, redis_server: RedisServer, how: str
) -> None:
    admin = await make_cache()
    await admin.store(entry("k1"))
    await admin.store(entry("k2", job_id="job-2", model="micro", prompt="a dog"))
    other = await make_cache()  # started after the stores, so its filter has them without waiting
    assert (await other.lookup("k1")) is not None  # now in other's L1 too
    assert other.memory.get("k1") is not None

    assert await invalidate(admin, how) == 1

    assert admin.memory.get("k1") is None
    with redis_server.client() as client:
        assert not client.exists(f"{DEFAULT_PREFIX}entry:k1")
        assert b"k1" not in client.smembers(f"{DEFAULT_PREFIX}by-model:tiny")
    await eventually(lambda: other.memory.get("k1") is None)  # the "del" event
    assert await other.lookup("k1") is None
    assert await admin.lookup("k1") is None
    hit = await other.lookup("k2")  # the other entry is untouched
    assert hit is not None
    assert await invalidate(admin, how) == 0


async def test_flush_empties_every_tier_and_instance(make_cache: MakeCache, redis_server: RedisServer) -> None:
    admin = await make_cache()
    await admin.store(entry("k1"))
    await admin.store(entry("k2", job_id="job-2"))
    other = await make_cache()
    assert (await other.lookup("k1")) is not None
    assert await admin.flush() == 2
    with redis_server.client() as client:
        assert client.keys(f"{DEFAULT_PREFIX}*") == []
    await eventually(lambda: len(other.memory) == 0)
    assert await other.lookup("k1") is None
    assert sample(other, "reelserve_cache_bloom_negatives_total") == 1  # its filter was emptied too
    stats = await admin.stats()
    assert stats["l1"] == {"entries": 0, "bytes": 0, "max_entries": 10_000, "max_bytes": 64 * 1024 * 1024,
                           "evictions": 0}
    assert stats["l2"] == {"configured": True, "up": True, "entries": 0}


async def test_l1_evictions_are_counted_and_redis_is_optional() -> None:
    cache = ResultCache(MemoryTier(max_entries=2), None, metrics=Metrics())
    for i in range(5):
        await cache.store(entry(f"k{i}"))
    assert sample(cache, "reelserve_cache_evictions_total", level="l1") == 3
    assert sample(cache, "reelserve_cache_entries", level="l1") == 2
    assert (await cache.lookup("k4")) is not None
    assert await cache.lookup("k0") is None
    assert cache.bloom is None


async def test_redis_going_down_degrades_to_l1_and_recovers(
    make_cache: MakeCache, redis_server: RedisServer
) -> None:
    cache = await make_cache()
    await cache.store(entry("k1"))
    redis_server.stop()

    await cache.store(entry("k2", job_id="job-2"))  # does not raise; kept in L1
    assert sample(cache, "reelserve_cache_errors_total", op="put") == 1
    hit = await cache.lookup("k2")
    assert hit is not None and hit.level == "l1"
    hit = await cache.lookup("k1")
    assert hit is not None and hit.level == "l1"
    cache.memory.clear()
    await eventually(lambda: cache.redis_up)  # past retry_after_s: the next call tries Redis again
    assert await cache.lookup("k1") is None
    assert await cache.invalidate_model("tiny") == 0
    assert await cache.flush() == 0
    stats = await cache.stats()
    assert stats["l2"]["entries"] is None  # type: ignore[index]
    errors = stats["errors"]
    assert isinstance(errors, dict) and sum(errors.values()) >= 2
    await eventually(lambda: sample(cache, "reelserve_cache_errors_total", op="listen") >= 1)

    redis_server.start()  # same port, empty
    await eventually(lambda: bloom_ready(cache))  # resubscribed and rebuilt the filter
    await eventually(lambda: cache.redis_up)
    await cache.store(entry("k3", job_id="job-3"))
    with redis_server.client() as client:
        assert client.exists(f"{DEFAULT_PREFIX}entry:k3")
    cache.memory.clear()
    hit = await cache.lookup("k3")
    assert hit is not None and hit.level == "l2"


async def bloom_ready(cache: ResultCache) -> bool:
    bloom = (await cache.stats())["bloom"]
    return isinstance(bloom, dict) and bool(bloom["ready"])


async def test_a_run_takes_back_only_its_own_entry(make_cache: MakeCache) -> None:
    # Worker one's run of job-1 stored k1 and then lost its job; worker two's run of job-2 stored k1 since.
    one, two = await make_cache(), await make_cache()
    await one.store(entry("k1", job_id="job-1"))
    await two.store(entry("k1", job_id="job-2"))
    assert await one.drop_entry("k1", "videos/job-1.mp4") == 0
    for cache in (one, two):  # the other run's entry stays, in Redis too; one's stale copy is gone
        hit = await cache.lookup("k1")
        assert hit is not None and hit.entry.job_id == "job-2"
    assert await two.drop_entry("k1", "videos/job-2.mp4") == 1
    assert await two.lookup("k1") is None and await (await make_cache()).lookup("k1") is None
