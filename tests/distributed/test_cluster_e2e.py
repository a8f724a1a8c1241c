"""The distributed mode as deployed: one ``reelserve api`` and two ``reelserve worker`` processes on a
private Redis (AOF), talking over loopback; webhooks to a real receiver; kill -9 of a worker mid-batch."""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import pytest
from cluster import Cluster, Process
from standardwebhooks.webhooks import Webhook
from support import Receiver, RedisServer, wait_until

from reelserve.webhooks import generate_secret

SECRET = generate_secret()
LONG = {"size": "256x256", "num_frames": 17, "num_inference_steps": 50}  # a batch of these runs seconds


class Running:
    def __init__(self, cluster: Cluster, api: Process, workers: dict[str, Process], redis: RedisServer) -> None:
        self.cluster, self.api, self.workers, self.redis = cluster, api, workers, redis
        self.client = httpx.Client(base_url=api.url, timeout=30)

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/v1/videos/{job_id}").json()

    def final(self, job_id: str, timeout: float = 120) -> dict:
        return wait_until(lambda: (job := self.job(job_id))["status"] in ("completed", "failed", "cancelled") and job,
                          timeout=timeout)

    def transitions_to(self, job_id: str, status: str) -> int:
        client = self.redis.client()
        try:
            log = [json.loads(raw) for raw in client.lrange(self.cluster.keys.transitions(job_id), 0, -1)]
        finally:
            client.close()
        return sum(1 for entry in log if entry["to"] == status)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as running:
        yield running


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(workdir / "redis", appendonly=True)
    redis.start()
    # Two lanes per worker, as their warm-up picks on a 2-core machine: the crash and drain trials
    # below then lose, and finish, two running batches per worker.
    cluster = Cluster(workdir, redis.url, webhook_secret=SECRET, webhook_allow="127.0.0.0/8", max_batch_size=4,
                      pipeline_lanes=2, cpu_threads=1)
    try:
        api = cluster.start("api", "api")
        workers = {name: cluster.start("worker", name) for name in ("worker-1", "worker-2")}
        for process in (api, *workers.values()):
            process.wait_ready()
        yield Running(cluster, api, workers, redis)
    finally:
        cluster.stop()
        redis.stop()


def decodes(content: bytes) -> int:
    with av.open(io.BytesIO(content)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_one_api_and_two_workers_serve_twenty_jobs_in_batches(running: Running) -> None:
    bodies = [{"prompt": f"a red ball number {i}", "size": "128x128", "num_frames": 17, "num_inference_steps": 50}
              for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda body: running.client.post("/v1/videos", json=body), bodies))
    assert all(response.status_code == 200 for response in created), [r.text for r in created]
    done = [running.final(response.json()["id"]) for response in created]
    assert [job["status"] for job in done] == ["completed"] * 20
    assert max(job["batch_size"] for job in done) > 1  # batches formed across requests sent through the API
    for job in done[:5]:
        content = running.client.get(f"/v1/videos/{job['id']}/content")
        assert content.status_code == 200 and decodes(content.content) == 17
    # Both workers took part. A worker counts a job just after saving it, so the API may show it first.
    def served() -> dict[str, float]:
        return {name: worker.metric('reelserve_jobs_finished_total{status="completed"}')
                for name, worker in running.workers.items()}

    wait_until(lambda: all(count > 0 for count in served().values()), timeout=30)


def test_cancel_from_the_api_stops_a_job_running_on_a_worker(running: Running) -> None:
    job = running.client.post("/v1/videos", json={"prompt": "to be cancelled", **LONG, "num_frames": 33}).json()
    wait_until(lambda: running.job(job["id"])["progress"] > 0, timeout=60)  # running on some worker, past step 1
    holder = running.workers[running.cluster.holder(job["id"]) or ""]
    stopped_before = holder.metric("reelserve_inference_seconds_count")
    cancelled = running.client.post(f"/v1/videos/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    # The worker notices at its next step: the batch ends with the row dropped, long before 50 steps.
    wait_until(lambda: holder.metric("reelserve_inference_seconds_count") > stopped_before, timeout=30)
    assert running.job(job["id"])["status"] == "cancelled"
    assert running.client.get(f"/v1/videos/{job['id']}/content").status_code == 409
    assert running.transitions_to(job["id"], "completed") == 0
    wait_until(lambda: running.cluster.holder(job["id"]) is None, timeout=10)  # its queue entry is gone


def test_kill_9_mid_batch_loses_nothing_and_completes_each_job_and_webhook_once(
    running: Running, receiver: Receiver
) -> None:
    receiver.requests.clear()
    bodies = [{"prompt": f"crash trial {i}", **LONG, "webhook_url": receiver.url} for i in range(6)]
    ids = [running.client.post("/v1/videos", json=body).json()["id"] for body in bodies]
    victim_job = wait_until(lambda: next((i for i in ids if running.job(i)["progress"] > 0), None), timeout=60)
    victim = running.cluster.holder(victim_job)
    assert victim in running.workers
    running.workers[victim].kill()  # mid-batch: its rows are past step 1 of 50
    done = [running.final(job_id, timeout=180) for job_id in ids]
    assert [job["status"] for job in done] == ["completed"] * 6
    assert running.job(victim_job)["attempts"] >= 2  # reclaimed and run again by the other worker
    for job_id in ids:
        assert running.transitions_to(job_id, "completed") == 1
        content = running.client.get(f"/v1/videos/{job_id}/content")
        assert content.status_code == 200 and decodes(content.content) == 17
    wait_until(lambda: all(running.job(i)["webhook"]["status"] == "delivered" for i in ids), timeout=60)
    verifier = Webhook(SECRET)
    delivered = [verifier.verify(r.body, r.headers) for r in receiver.requests]
    assert sorted(message["data"]["id"] for message in delivered) == sorted(ids)  # exactly one each
    # A new worker under the victim's name joins; the cluster is whole again for later tests.
    running.workers[victim] = running.cluster.start("worker", victim)
    running.workers[victim].wait_ready()


def test_sigterm_parks_the_running_rows_for_another_worker_to_resume(running: Running) -> None:
    ids = [running.client.post("/v1/videos", json={"prompt": f"drain {i}", **LONG}).json()["id"] for i in range(6)]
    busy = wait_until(lambda: next((i for i in ids if running.job(i)["progress"] > 0), None), timeout=60)
    name = running.cluster.holder(busy)
    assert name in running.workers
    # uvicorn re-raises the SIGTERM it caught once shutdown is over: -15 after a clean drain.
    assert running.workers[name].terminate(timeout=120) in (0, -signal.SIGTERM)
    done = [running.final(job_id, timeout=180) for job_id in ids]
    assert [job["status"] for job in done] == ["completed"] * 6
    assert running.job(busy)["attempts"] == 2  # handed back mid-run, finished by the other worker
    (other,) = (process for worker, process in running.workers.items() if worker != name)
    assert other.metric("reelserve_resumed_steps_total") >= 1  # from the steps the drained worker ran
    running.workers[name] = running.cluster.start("worker", name)
    running.workers[name].wait_ready()


def test_every_key_the_cluster_wrote_is_under_its_namespace(running: Running) -> None:
    # Job records, indexes, queue streams and stats alike: one namespace, one hash tag, one Cluster slot.
    client = running.redis.client()
    try:
        keys = {key.decode() for key in client.keys("*")}
    finally:
        client.close()
    assert any(":job:" in key for key in keys) and any(":stream:" in key for key in keys)
    assert any(":stats:" in key for key in keys), keys
    assert all(key.startswith("{reelserve}:") for key in keys), keys
