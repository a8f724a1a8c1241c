"""RedisJobStore: what only Redis has (TTL retention, per-tenant listing, namespaces, cluster slots,
client ownership), on a real private redis-server. The JobStore contract (other clients and thread
safety included) is in test_store_contract.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot
from support import RedisServer, wait_until
from test_store_contract import NONE, finish, make_job

from reelserve.jobs.redis_scripts import PRUNE_BATCH
from reelserve.redis_names import RedisKeys
from reelserve.jobs.redis_store import RedisJobStore
from reelserve.schemas import JobStatus

SHORT_RETENTION_S = 0.2


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture
def store(client: redis.Redis) -> Iterator[RedisJobStore]:
    s = RedisJobStore(client)
    yield s
    s.close()


@pytest.fixture
def short_store(client: redis.Redis) -> Iterator[RedisJobStore]:
    """Final jobs expire after SHORT_RETENTION_S."""
    s = RedisJobStore(client, retention_s=SHORT_RETENTION_S)
    yield s
    s.close()


def test_list_for_tenant_rejects_negative_limit(store: RedisJobStore) -> None:
    with pytest.raises(ValueError):
        store.list_for_tenant("acme", limit=-1)


def test_delete_removes_the_job_from_its_tenant_list(store: RedisJobStore) -> None:
    store.create(make_job(1, tenant="acme"))
    store.create(make_job(3, tenant="acme"))
    assert store.delete("video_0001")
    assert [j.id for j in store.list_for_tenant("acme", limit=10)] == ["video_0003"]
    assert store.delete("video_0003")
    assert store.list_for_tenant("acme", limit=10) == []


def test_close_leaves_a_borrowed_client_open(client: redis.Redis) -> None:
    s = RedisJobStore(client)
    s.close()
    s.close()
    assert client.ping()  # a borrowed client is its owner's to close


def test_from_url_owns_and_closes_its_client(redis_server: RedisServer, client: redis.Redis) -> None:
    def connections() -> int:
        return len(client.client_list())

    before = connections()
    s = RedisJobStore.from_url(redis_server.url)
    s.create(make_job(1))
    assert connections() == before + 1
    s.close()
    wait_until(lambda: connections() == before, timeout=10)  # the store's own client was closed


def test_final_jobs_get_a_ttl_and_unfinished_ones_do_not(store: RedisJobStore, client: redis.Redis) -> None:
    keys = store.keys
    store.create(make_job(1))
    store.create(make_job(2, status=JobStatus.failed))  # created final: expires too
    assert client.ttl(keys.job("video_0001")) == -1 and client.ttl(keys.transitions("video_0001")) == -1
    assert store.save(make_job(1, status=JobStatus.in_progress))
    assert client.ttl(keys.job("video_0001")) == -1
    assert store.save(finish(make_job(1)))
    week = 7 * 86400
    for job_id in ("video_0001", "video_0002"):
        assert week - 5 <= client.ttl(keys.job(job_id)) <= week
        assert week - 5 <= client.ttl(keys.transitions(job_id)) <= week
    assert store.save(make_job(1, status=JobStatus.queued))  # back to the queue: kept for good again
    assert client.ttl(keys.job("video_0001")) == -1 and client.ttl(keys.transitions("video_0001")) == -1
    assert client.zrange(keys.expiring(), 0, -1) == [b"video_0002"]


def test_no_retention_keeps_final_jobs_forever(client: redis.Redis) -> None:
    s = RedisJobStore(client, retention_s=None)
    s.create(make_job(1, status=JobStatus.completed))
    assert client.ttl(s.keys.job("video_0001")) == -1
    assert client.zcard(s.keys.expiring()) == 0
    with pytest.raises(ValueError):
        RedisJobStore(client, retention_s=0)


def test_an_expired_job_disappears_from_every_listing(
    short_store: RedisJobStore, client: redis.Redis
) -> None:
    store = short_store
    for i in range(4):
        store.create(make_job(i, tenant="acme"))
    assert store.save(finish(make_job(1, tenant="acme")))
    assert store.save(finish(make_job(2, tenant="acme"), JobStatus.cancelled))
    wait_until(lambda: store.get("video_0001") is None and store.get("video_0002") is None, timeout=10)
    assert store.transitions("video_0001") == []
    assert [j.id for j in store.list(limit=10)] == ["video_0003", "video_0000"]
    assert [j.id for j in store.list(limit=1, after="video_0003")] == ["video_0000"]
    with pytest.raises(KeyError):
        store.list(limit=10, after="video_0002")
    assert [j.id for j in store.list_for_tenant("acme", limit=10)] == ["video_0003", "video_0000"]
    assert store.count_by_status() == {**NONE, "queued": 2}
    assert [j.id for j in store.unfinished()] == ["video_0000", "video_0003"]
    # The indexes were cleaned, not just filtered: only the two live jobs are left anywhere.
    keys = store.keys
    for index in (keys.jobs_by_insertion(), keys.tenant_jobs("acme"), keys.status_jobs(JobStatus.queued)):
        assert client.zcard(index) == 2
    assert client.zcard(keys.expiring()) == 0 and client.hlen(keys.expiring_tenants()) == 0


def test_an_expired_id_can_be_created_again(short_store: RedisJobStore, client: redis.Redis) -> None:
    short_store.create(make_job(1, status=JobStatus.completed, tenant="acme"))
    short_store.create(make_job(2))
    wait_until(lambda: short_store.get("video_0001") is None, timeout=10)
    short_store.create(make_job(1))  # before any read forgot the expired one: create cleans up itself
    assert [j.id for j in short_store.list(limit=10)] == ["video_0001", "video_0002"]
    assert short_store.transitions("video_0001") == [(None, "queued")]
    assert short_store.count_by_status() == {**NONE, "queued": 2}
    assert short_store.list_for_tenant("acme", limit=10) == []
    assert client.zcard(short_store.keys.expiring()) == 0


def test_a_backlog_of_expired_jobs_longer_than_a_batch_is_forgotten(short_store: RedisJobStore) -> None:
    n = PRUNE_BATCH + 20
    for i in range(n):
        short_store.create(make_job(i, status=JobStatus.completed))
    short_store.create(make_job(n))
    last = f"video_{n - 1:04d}"
    wait_until(lambda: short_store.get("video_0000") is None and short_store.get(last) is None)
    assert short_store.count_by_status() == {**NONE, "queued": 1}
    assert [j.id for j in short_store.list(limit=10)] == [f"video_{n:04d}"]


def test_list_for_tenant_pages_newest_first(store: RedisJobStore) -> None:
    for i in range(6):
        store.create(make_job(i, tenant="acme" if i % 2 else "umbrella"))
    store.create(make_job(6))  # no tenant
    page1 = store.list_for_tenant("acme", limit=2)
    assert [j.id for j in page1] == ["video_0005", "video_0003"]
    assert [j.id for j in store.list_for_tenant("acme", limit=2, after="video_0003")] == ["video_0001"]
    umbrella = ["video_0004", "video_0002", "video_0000"]
    assert [j.id for j in store.list_for_tenant("umbrella", limit=10)] == umbrella
    assert store.list_for_tenant("nobody", limit=10) == []
    with pytest.raises(KeyError):
        store.list_for_tenant("acme", limit=10, after="video_0002")  # a job, but not this tenant's
    # A save that changes the tenant moves the job between the tenant lists.
    assert store.save(make_job(5, tenant="umbrella"))
    assert [j.id for j in store.list_for_tenant("acme", limit=10)] == ["video_0003", "video_0001"]
    assert [j.id for j in store.list_for_tenant("umbrella", limit=1)] == ["video_0005"]


def test_two_namespaces_on_one_redis_do_not_see_each_other(client: redis.Redis) -> None:
    blue, green = RedisJobStore(client, namespace="blue"), RedisJobStore(client, namespace="green")
    blue.create(make_job(1, tenant="acme"))
    green.create(make_job(1, status=JobStatus.in_progress))
    green.create(make_job(2))
    assert [j.id for j in blue.list(limit=10)] == ["video_0001"]
    assert blue.get("video_0001") == make_job(1, tenant="acme")
    assert green.list_for_tenant("acme", limit=10) == []
    assert blue.count_by_status()[JobStatus.queued] == 1
    assert green.count_by_status()[JobStatus.queued] == 1
    assert blue.delete("video_0001")
    assert green.get("video_0001") == make_job(1, status=JobStatus.in_progress)


def test_every_key_of_a_namespace_is_in_one_cluster_slot(store: RedisJobStore, client: redis.Redis) -> None:
    store.create(make_job(1, tenant="acme"))
    store.create(make_job(2, status=JobStatus.completed, tenant="acme"))
    all_keys = client.keys("*")
    assert len(all_keys) > 8 and all(k.startswith(b"{reelserve}:") for k in all_keys)
    assert {key_slot(k) for k in all_keys} == {key_slot(b"{reelserve}")}
    with pytest.raises(ValueError):
        RedisKeys("re{el}")


def test_works_with_a_decoding_client(redis_server: RedisServer) -> None:
    c = redis.Redis(port=redis_server.port, decode_responses=True)
    s = RedisJobStore(c)
    try:
        s.create(make_job(1))
        assert s.save(finish(make_job(1)), expect={JobStatus.queued})
        assert [j.id for j in s.list(limit=5)] == ["video_0001"]
        assert s.transitions("video_0001") == [(None, "queued"), ("queued", "completed")]
        assert s.count_by_status()[JobStatus.completed] == 1
    finally:
        s.close()
        c.close()
