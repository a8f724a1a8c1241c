"""A job whose workers keep dying is given up on: after ``max_deliveries`` it fails with
``worker_lost`` and its entry moves to the dead-letter stream, instead of killing workers forever."""

from __future__ import annotations

from pathlib import Path

import httpx
from cluster import Cluster
from support import RedisServer, wait_until


def test_a_job_delivered_max_deliveries_times_fails_with_worker_lost(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    cluster = Cluster(tmp_path, redis.url, max_deliveries=1)
    try:
        api, first, second = cluster.start("api", "api"), cluster.start("worker", "w1"), cluster.start("worker", "w2")
        for process in (api, first, second):
            process.wait_ready()
        client = httpx.Client(base_url=api.url, timeout=30)
        body = {"prompt": "doomed", "size": "256x256", "num_frames": 17, "num_inference_steps": 50}
        job_id = client.post("/v1/videos", json=body).json()["id"]
        wait_until(lambda: client.get(f"/v1/videos/{job_id}").json()["progress"] > 0, timeout=60)
        holder = cluster.holder(job_id)
        {"w1": first, "w2": second}[holder or ""].kill()

        failed = wait_until(lambda: (job := client.get(f"/v1/videos/{job_id}").json())["status"] != "in_progress" and job,
                            timeout=60)
        assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost", failed
        peek = redis.client()
        dead = peek.xrange(cluster.keys.dead_letters("tiny"))
        peek.close()
        assert [fields[b"job_id"].decode() for _, fields in dead] == [job_id]
        assert cluster.holder(job_id) is None  # no longer pending anywhere: no worker will run it again
    finally:
        cluster.stop()
        redis.stop()
