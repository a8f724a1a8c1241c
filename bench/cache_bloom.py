"""Does the bloom filter in front of L2 pay? ``ResultCache.lookup`` of absent keys against a real Redis
(a private redis-server on loopback), with the filter on vs off, in interleaved rounds.

A miss with the filter off costs an L1 probe and one Redis round trip (the GET script); with it on,
an L1 probe and a filter probe, and Redis only for a false positive. Redis is first filled with
``--entries`` entries so the filter is not trivially empty.

    .venv/bin/python bench/cache_bloom.py [--entries 10000 --lookups 5000 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time

import redis
from _harness import machine, percentile, print_table, redis_server

from reelserve.cache import CacheEntry, MemoryTier, ResultCache, redis_tier_from_url
from reelserve.metrics import Metrics


def key(prefix: str, n: int) -> str:
    return hashlib.sha256(f"{prefix}-{n}".encode()).hexdigest()


def entry(n: int) -> CacheEntry:
    k = key("stored", n)
    return CacheEntry(key=k, job_id=f"job-{n}", video_key=f"videos/{n}.mp4", thumbnail_key=None, size=1000,
                      created=time.time(), model="micro", prompt_hash=k, signature="s", model_seconds=1.0,
                      prompt=f"prompt {n}")


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


async def misses(cache: ResultCache, keys: list[str]) -> list[float]:
    """Microseconds per lookup; every key must be absent."""
    times = []
    for k in keys:
        started = time.perf_counter()
        hit = await cache.lookup(k)
        times.append((time.perf_counter() - started) * 1e6)
        assert hit is None
    return times


async def measure(url: str, entries: int, lookups: int, rounds: int) -> dict[str, tuple[list[float], int, float]]:
    """Per mode: microseconds per lookup, Redis commands processed, lookups the filter answered."""
    off = ResultCache(MemoryTier(), redis_tier_from_url(url), metrics=Metrics(), use_bloom=False)
    await off.start()
    for n in range(entries):
        await off.store(entry(n))
    off.memory.clear()  # lookups must pass L1 in both modes
    on = ResultCache(MemoryTier(), redis_tier_from_url(url), metrics=Metrics(), use_bloom=True)
    await on.start()  # builds the filter from a scan of the entries just stored
    assert (await on.stats())["bloom"] == {"enabled": True, "ready": True}
    caches = {"bloom off (--no-cache-bloom)": off, "bloom on (default)": on}

    counter = redis.Redis.from_url(url)
    times: dict[str, list[float]] = {label: [] for label in caches}
    commands = dict.fromkeys(caches, 0)
    for label, cache in caches.items():
        await misses(cache, [key(f"warm-{label}", n) for n in range(200)])
    negatives_before = on.metrics.registry.get_sample_value("reelserve_cache_bloom_negatives_total") or 0.0
    for r in range(rounds):
        labels = list(caches) if r % 2 == 0 else list(reversed(caches))  # alternate who goes first
        for label in labels:
            keys = [key(f"absent-{label}-{r}", n) for n in range(lookups // rounds)]
            before = commands_processed(counter)
            times[label] += await misses(caches[label], keys)
            commands[label] += commands_processed(counter) - before - 1  # less the first INFO itself
    counter.close()
    negatives = (on.metrics.registry.get_sample_value("reelserve_cache_bloom_negatives_total") or 0.0) - negatives_before
    for cache in caches.values():
        await cache.close()
    return {label: (times[label], commands[label], negatives if cache is on else 0.0)
            for label, cache in caches.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000, help="entries stored in Redis first")
    parser.add_argument("--lookups", type=int, default=5000, help="absent-key lookups per mode")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with redis_server() as url:
        results = asyncio.run(measure(url, args.entries, args.lookups, args.rounds))

    base = statistics.mean(next(iter(results.values()))[0])
    rows = []
    for label, (times, commands, negatives) in results.items():
        rows.append([label, f"{statistics.mean(times):.1f}", f"{percentile(times, 50):.1f}",
                     f"{percentile(times, 99):.1f}", f"{statistics.mean(times) / base:.3f}",
                     f"{commands}", f"{negatives:.0f}"])
    print_table(
        f"Cache miss lookup (ResultCache.lookup, absent keys), {args.lookups // args.rounds * args.rounds} per mode in "
        f"{args.rounds} interleaved rounds, {args.entries} entries in Redis (loopback)\n{machine()}",
        ["mode", "mean us", "p50 us", "p99 us", "ratio to off", "Redis commands", "bloom negatives"], rows,
    )


if __name__ == "__main__":
    main()
