"""RedisJobStore: the JobStore contract (as for SqliteJobStore) on a real private redis-server, plus
what only Redis has: other clients, TTL retention, per-tenant listing, namespaces."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.crc import key_slot
from support import RedisServer, wait_until

from reelserve.jobs import JobStore
from reelserve.jobs.redis_keys import PRUNE_BATCH, RedisKeys
from reelserve.jobs.redis_store import RedisJobStore
from reelserve.schemas import GenerationParams, Job, JobError, JobStatus

PARAMS = GenerationParams(
    model="tiny",
    prompt="a red fox in the snow",
    width=64,
    height=48,
    num_frames=9,
    fps=8,
    num_inference_steps=2,
    guidance_scale=5.0,
    seed=1234,
)
SHORT_RETENTION_S = 0.2
NONE = dict.fromkeys(JobStatus, 0)  # count_by_status() of an empty store


def make_job(index: int = 0, **changes: object) -> Job:
    return Job(id=f"video_{index:04d}", params=PARAMS, created_at=1_700_000_000.0 + index, **changes)


def finish(job: Job, status: JobStatus = JobStatus.completed) -> Job:
    return job.model_copy(update={"status": status, "progress": 100})


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


# -- the JobStore contract: the same tests as test_sqlite_store.py ----------------------------------


def test_satisfies_the_protocol(store: RedisJobStore) -> None:
    backend: JobStore = store
    assert backend.get("video_missing") is None


def test_create_get_round_trip(store: RedisJobStore) -> None:
    job = make_job(1, batch_size=2, attempts=1, tenant="acme")
    store.create(job)
    assert store.get(job.id) == job


def test_duplicate_create_raises_and_keeps_the_original(store: RedisJobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(ValueError):
        store.create(make_job(1, progress=50))
    stored = store.get("video_0001")
    assert stored is not None and stored.progress == 0
    assert store.transitions("video_0001") == [(None, "queued")]


def test_list_pages_newest_first(store: RedisJobStore) -> None:
    for i in range(7):
        store.create(make_job(i))
    page1 = store.list(limit=3)
    page2 = store.list(limit=3, after=page1[-1].id)
    page3 = store.list(limit=3, after=page2[-1].id)
    assert [j.id for j in page1] == ["video_0006", "video_0005", "video_0004"]
    assert [j.id for j in page2] == ["video_0003", "video_0002", "video_0001"]
    assert [j.id for j in page3] == ["video_0000"]
    assert store.list(limit=3, after="video_0000") == []
    assert [j.id for j in store.list(limit=100)] == [f"video_{i:04d}" for i in range(6, -1, -1)]
    assert store.list(limit=0) == []


def test_list_orders_by_insertion_not_created_at(store: RedisJobStore) -> None:
    store.create(make_job(5))
    store.create(make_job(1))  # inserted later with an older timestamp
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0005"]


def test_list_with_unknown_cursor_raises_key_error(store: RedisJobStore) -> None:
    store.create(make_job(1))
    with pytest.raises(KeyError):
        store.list(limit=10, after="video_nope")
    with pytest.raises(KeyError):
        store.list(limit=0, after="video_nope")


def test_list_rejects_negative_limit(store: RedisJobStore) -> None:
    with pytest.raises(ValueError):
        store.list(limit=-1)
    with pytest.raises(ValueError):
        store.list_for_tenant("acme", limit=-1)


def test_save_writes_and_logs_transitions(store: RedisJobStore) -> None:
    job = make_job(1)
    store.create(job)
    running = job.model_copy(update={"status": JobStatus.in_progress, "started_at": 1.0})
    assert store.save(running, expect={JobStatus.queued})
    halfway = running.model_copy(update={"progress": 50})
    assert store.save(halfway)  # no status change: no transition
    done = halfway.model_copy(update={"status": JobStatus.completed, "progress": 100, "video_key": "v.mp4"})
    assert store.save(done, expect={JobStatus.in_progress})
    assert store.get(job.id) == done
    assert store.transitions(job.id) == [
        (None, "queued"),
        ("queued", "in_progress"),
        ("in_progress", "completed"),
    ]


def test_cancelled_job_cannot_be_saved_as_completed(store: RedisJobStore) -> None:
    job = make_job(1, status=JobStatus.in_progress)
    store.create(job)
    cancelled = job.model_copy(update={"status": JobStatus.cancelled})
    assert store.save(cancelled, expect={JobStatus.queued, JobStatus.in_progress})
    completed = job.model_copy(update={"status": JobStatus.completed, "progress": 100})
    assert not store.save(completed, expect={JobStatus.in_progress})
    assert not store.save(completed, expect=set())
    assert store.get(job.id) == cancelled
    assert store.transitions(job.id) == [(None, "in_progress"), ("in_progress", "cancelled")]


def test_save_of_missing_job_returns_false_and_creates_nothing(
    store: RedisJobStore, client: redis.Redis
) -> None:
    assert not store.save(make_job(9))
    assert not store.save(make_job(9), expect={JobStatus.queued})
    assert store.get("video_0009") is None
    assert store.transitions("video_0009") == []
    assert client.keys("*") == []


def test_unfinished_oldest_first(store: RedisJobStore) -> None:
    statuses = [
        JobStatus.completed,
        JobStatus.queued,
        JobStatus.in_progress,
        JobStatus.failed,
        JobStatus.queued,
        JobStatus.cancelled,
    ]
    for i, status in enumerate(statuses):
        store.create(make_job(i, status=status))
    assert [j.id for j in store.unfinished()] == ["video_0001", "video_0002", "video_0004"]
    assert store.save(finish(make_job(1)))  # finishing leaves the list, going back to queued rejoins it
    assert store.save(make_job(3, status=JobStatus.queued))
    assert [j.id for j in store.unfinished()] == ["video_0002", "video_0003", "video_0004"]


def test_count_by_status_has_every_key(store: RedisJobStore) -> None:
    assert store.count_by_status() == dict.fromkeys(JobStatus, 0)
    store.create(make_job(1))
    store.create(make_job(2))
    store.create(
        make_job(3, status=JobStatus.failed, error=JobError(code="generation_failed", message="oom"))
    )
    counts = store.count_by_status()
    assert set(counts) == set(JobStatus)
    assert counts[JobStatus.queued] == 2
    assert counts[JobStatus.failed] == 1
    assert counts[JobStatus.completed] == 0
    assert store.save(finish(make_job(1)))
    assert store.count_by_status() == {**NONE, "queued": 1, "failed": 1, "completed": 1}


def test_delete_removes_job_and_transitions(store: RedisJobStore) -> None:
    store.create(make_job(1, tenant="acme"))
    store.create(make_job(2))
    assert store.delete("video_0001")
    assert not store.delete("video_0001")
    assert store.get("video_0001") is None
    assert store.transitions("video_0001") == []
    assert [j.id for j in store.list(limit=10)] == ["video_0002"]
    assert store.list_for_tenant("acme", limit=10) == []
    assert store.count_by_status()[JobStatus.queued] == 1
    assert [j.id for j in store.unfinished()] == ["video_0002"]
    store.create(make_job(1))  # the id is free again, and sorts as the newest
    assert [j.id for j in store.list(limit=10)] == ["video_0001", "video_0002"]


def test_close_is_idempotent(client: redis.Redis) -> None:
    s = RedisJobStore(client)
    s.close()
    s.close()
    with pytest.raises(RuntimeError):
        s.get("video_0001")
    with pytest.raises(RuntimeError):
        s.create(make_job(1))
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


def test_concurrent_saves_lose_nothing(store: RedisJobStore) -> None:
    threads_n, saves_each = 4, 50
    for t in range(threads_n):
        store.create(make_job(t))
    start = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        start.wait(timeout=30)
        job = store.get(f"video_{t:04d}")
        assert job is not None
        for step in range(1, saves_each + 1):
            status = JobStatus.in_progress if step % 2 else JobStatus.queued
            job = job.model_copy(update={"status": status, "attempts": step})
            assert store.save(job, expect={JobStatus.queued, JobStatus.in_progress})
            store.list(limit=5)  # interleave reads on the same client

    with ThreadPoolExecutor(max_workers=threads_n) as pool:
        for future in [pool.submit(worker, t) for t in range(threads_n)]:
            future.result(timeout=30)  # re-raises a worker's failure here
    for t in range(threads_n):
        job = store.get(f"video_{t:04d}")
        assert job is not None and job.attempts == saves_each and job.status == JobStatus.queued
        log = store.transitions(job.id)
        assert len(log) == 1 + saves_each  # the create, then one transition per save
        assert log[0] == (None, "queued")
        assert all(a != b for a, b in log[1:])
    assert store.count_by_status()[JobStatus.queued] == threads_n


def test_concurrent_compare_and_set_has_one_winner(store: RedisJobStore, redis_server: RedisServer) -> None:
    # Many racers, each with its own client (as separate processes would be), move one queued job forward.
    store.create(make_job(1))
    racers = 8
    start = threading.Barrier(racers)
    clients = [redis_server.client() for _ in range(racers)]

    def racer(i: int) -> bool:
        own = RedisJobStore(clients[i])
        start.wait(timeout=30)
        return own.save(make_job(1, status=JobStatus.in_progress, attempts=i), expect={JobStatus.queued})

    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            results = [f.result(timeout=30) for f in [pool.submit(racer, i) for i in range(racers)]]
    finally:
        for c in clients:
            c.close()
    assert sorted(results) == [False] * (racers - 1) + [True]
    assert store.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
    winner = store.get("video_0001")
    assert winner is not None and results[winner.attempts]


# -- what Redis adds --------------------------------------------------------------------------------


def test_writes_are_visible_to_another_client_at_once(
    store: RedisJobStore, redis_server: RedisServer
) -> None:
    other_client = redis_server.client()
    other = RedisJobStore(other_client)
    try:
        store.create(make_job(1))
        assert other.get("video_0001") == make_job(1)
        assert other.save(make_job(1, status=JobStatus.in_progress), expect={JobStatus.queued})
        stored = store.get("video_0001")
        assert stored is not None and stored.status == JobStatus.in_progress
    finally:
        other.close()
        other_client.close()


def test_a_new_store_on_the_same_redis_keeps_everything(client: redis.Redis) -> None:
    first = RedisJobStore(client)
    first.create(make_job(1))
    first.create(make_job(2))
    running = make_job(1, status=JobStatus.in_progress, started_at=5.0)
    assert first.save(running)
    first.close()

    # A restart: a new store on the same Redis sees every job and can keep going.
    second = RedisJobStore(client)
    assert second.get("video_0001") == running
    assert [j.id for j in second.unfinished()] == ["video_0001", "video_0002"]
    assert second.transitions("video_0001") == [(None, "queued"), ("queued", "in_progress")]
    second.create(make_job(3))
    assert [j.id for j in second.list(limit=10)] == ["video_0003", "video_0002", "video_0001"]
    second.close()


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
