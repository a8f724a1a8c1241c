"""Redis with AOF goes away and comes back while jobs are queued: the API answers 503 with a reason
meanwhile, and every job it had accepted completes afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx
from cluster import Cluster
from support import RedisServer, wait_until


def test_redis_restart_with_aof_loses_no_accepted_job(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    redis.start()
    cluster = Cluster(tmp_path, redis.url)
    try:
        api = cluster.start("api", "api")
        api.wait_ready()
        client = httpx.Client(base_url=api.url, timeout=30)
        ids = [client.post("/v1/videos", json={"prompt": f"queued {i}"}).json()["id"] for i in range(5)]
        assert all(client.get(f"/v1/videos/{i}").json()["status"] == "queued" for i in ids)  # no worker yet

        redis.stop(kill=True)  # a crash: only what AOF kept survives
        refused = client.post("/v1/videos", json={"prompt": "while redis is down"})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"]["code"] == "unavailable" and "Redis" in refused.json()["error"]["message"]
        assert client.get(f"/v1/videos/{ids[0]}").status_code == 503
        wait_until(lambda: client.get("/readyz").status_code == 503, timeout=10)

        redis.start()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30)
        worker = cluster.start("worker", "worker-1")
        worker.wait_ready()
        finals = [wait_until(lambda i=i: (job := client.get(f"/v1/videos/{i}").json())["status"] == "completed" and job,
                             timeout=120) for i in ids]
        assert len(finals) == 5
        assert client.get("/v1/videos", params={"limit": 100}).json()["data"].__len__() == 5  # the refused one never existed
    finally:
        cluster.stop()
        redis.stop()
