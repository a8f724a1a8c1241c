"""Every Redis name of one namespace carries its hash tag, so every multi-key script, the job
store's, the queue's and the cache's alike, runs on a Redis Cluster slot of its own."""

import pytest
from redis.crc import key_slot

from reelserve.redis_names import RedisKeys


def every_name(keys: RedisKeys) -> list[str]:
    cache, stats = keys.cache, keys.stats
    return [
        keys.job("j1"), keys.transitions("j1"), keys.tenant_jobs("t1"), *keys.job_index(),
        keys.stream("tiny", 0), keys.stream("tiny", 2), keys.dead_letters("tiny"),
        keys.broker_entries("tiny"), keys.events("j1"),
        cache.entry("k1"), cache.by_model("tiny"), cache.by_prompt("p1"), cache.by_job("j1"), cache.semantic("k1"),
        cache.semantic_by_signature("s1"), cache.events,
        stats.bucket(60), stats.latencies(60), stats.workers,
    ]


@pytest.mark.parametrize("namespace", ["reelserve", "shop-1", "a:b"])
def test_every_name_of_a_namespace_is_in_one_cluster_slot(namespace: str) -> None:
    names = every_name(RedisKeys(namespace))
    assert all(name.startswith("{" + namespace + "}:") for name in names)
    assert {key_slot(name.encode()) for name in names} == {key_slot(("{" + namespace + "}").encode())}
    assert len(set(names)) == len(names)  # no two roles share a name


def test_two_namespaces_share_no_name() -> None:
    assert not set(every_name(RedisKeys("a"))) & set(every_name(RedisKeys("b")))


@pytest.mark.parametrize("bad", ["", "{x}", "a}"])
def test_a_namespace_that_would_break_the_hash_tag_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisKeys(bad)
