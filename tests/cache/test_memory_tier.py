"""L1: LRU by count and by bytes, a sliding TTL on a fake clock, and the invalidation indexes."""

from __future__ import annotations

import dataclasses

import pytest

from reelserve.cache.entry import CacheEntry
from reelserve.cache.memory import MemoryTier


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(key: str, job_id: str = "job-1", model: str = "tiny", prompt_hash: str = "p1", prompt: str = "a cat") -> CacheEntry:
    return CacheEntry(
        key=key,
        job_id=job_id,
        video_key=f"videos/{job_id}.mp4",
        thumbnail_key=None,
        size=1234,
        created=1_700_000_000.5,
        model=model,
        prompt_hash=prompt_hash,
        signature="sig",
        model_seconds=12.5,
        prompt=prompt,
    )


def test_entry_round_trips_through_redis_form() -> None:
    original = entry("k1")
    as_bytes = {k.encode(): v.encode() for k, v in original.to_redis().items()}
    assert CacheEntry.from_redis(as_bytes) == original
    with_thumbnail = dataclasses.replace(original, thumbnail_key="thumbs/job-1.jpg")
    assert CacheEntry.from_redis(with_thumbnail.to_redis()) == with_thumbnail
    assert original.to_redis()["thumbnail_key"] == ""
    assert original.nbytes() > 0


def test_get_put_delete() -> None:
    tier = MemoryTier()
    assert tier.get("k1") is None
    tier.put(entry("k1"))
    assert tier.get("k1") == entry("k1")
    assert len(tier) == 1 and tier.nbytes == entry("k1").nbytes()
    assert tier.delete("k1") is True
    assert tier.delete("k1") is False
    assert len(tier) == 0 and tier.nbytes == 0


def test_evicts_least_recently_used_beyond_max_entries() -> None:
    tier = MemoryTier(max_entries=3)
    for key in ("k1", "k2", "k3"):
        tier.put(entry(key))
    assert tier.get("k1") is not None  # k1 is now the most recent; k2 the least
    tier.put(entry("k4"))
    assert tier.keys() == {"k1", "k3", "k4"}
    assert tier.evictions == 1
    tier.put(entry("k5"))
    assert tier.keys() == {"k1", "k4", "k5"}
    assert tier.evictions == 2


def test_evicts_beyond_max_bytes() -> None:
    one = entry("k1").nbytes()
    tier = MemoryTier(max_entries=100, max_bytes=one * 2 + one // 2)  # room for two entries, not three
    for key in ("k1", "k2", "k3"):
        tier.put(entry(key))
    assert tier.keys() == {"k2", "k3"}
    assert tier.nbytes <= tier.max_bytes
    assert tier.evictions == 1


def test_entry_larger_than_the_byte_budget_is_not_kept() -> None:
    tier = MemoryTier(max_bytes=100)
    tier.put(entry("k1", prompt="x" * 500))
    assert tier.get("k1") is None
    assert tier.evictions == 0


def test_replacing_an_entry_keeps_one_copy_and_updates_indexes() -> None:
    tier = MemoryTier(max_entries=2)
    tier.put(entry("k1", model="tiny"))
    tier.put(entry("k1", model="micro"))
    assert len(tier) == 1 and tier.evictions == 0
    assert tier.keys_for_model("tiny") == set()
    assert tier.keys_for_model("micro") == {"k1"}


def test_ttl_expires_and_a_hit_restarts_it() -> None:
    clock = FakeClock()
    tier = MemoryTier(ttl_s=100, clock=clock)
    tier.put(entry("k1"))
    tier.put(entry("k2"))
    clock.now += 90
    assert tier.get("k1") is not None  # k1's clock restarts here; k2's does not
    clock.now += 20  # 110 s after the put, 20 s after k1's hit
    assert tier.get("k2") is None
    assert tier.get("k1") is not None
    assert tier.expirations == 1
    assert tier.keys() == {"k1"}
    assert tier.keys_for_job("job-1") == {"k1"}  # the expired entry left the indexes too
    clock.now += 100
    assert tier.get("k1") is None


def test_index_lookups_follow_puts_deletes_and_evictions() -> None:
    tier = MemoryTier(max_entries=3)
    tier.put(entry("k1", job_id="j1", model="tiny", prompt_hash="p1"))
    tier.put(entry("k2", job_id="j2", model="tiny", prompt_hash="p2"))
    tier.put(entry("k3", job_id="j2", model="micro", prompt_hash="p1"))
    assert tier.keys_for_job("j2") == {"k2", "k3"}
    assert tier.keys_for_model("tiny") == {"k1", "k2"}
    assert tier.keys_for_prompt("p1") == {"k1", "k3"}
    tier.delete("k3")
    assert tier.keys_for_job("j2") == {"k2"}
    assert tier.keys_for_prompt("p1") == {"k1"}
    tier.put(entry("k4", job_id="j4", model="micro", prompt_hash="p4"))
    tier.put(entry("k5", job_id="j5", model="micro", prompt_hash="p5"))  # evicts k1
    assert tier.keys_for_job("j1") == set()
    assert tier.keys_for_model("tiny") == {"k2"}
    assert tier.keys_for_model("nothing") == set()


def test_clear_empties_everything_without_counting_evictions() -> None:
    tier = MemoryTier()
    tier.put(entry("k1"))
    tier.put(entry("k2"))
    assert tier.clear() == 2
    assert len(tier) == 0 and tier.nbytes == 0
    assert tier.keys_for_job("job-1") == set()
    assert tier.evictions == 0


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        MemoryTier(max_entries=0)
