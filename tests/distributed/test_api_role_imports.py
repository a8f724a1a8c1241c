"""The distributed API role is the front only: `reelserve api`, started as users start it and
serving jobs, never loads torch, diffusers, transformers or PyAV (the workers run the model and
write the videos). Read from the process's own memory map, so any path that imports them shows:
torch and PyAV map their native libraries; diffusers and transformers are pure Python and import
torch, so torch stands for them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from cluster import Cluster
from support import RedisServer, wait_until

HEAVY = ("torch", "av")


def loaded_packages(pid: int) -> set[str]:
    """The heavy packages whose native libraries the process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in HEAVY if f"site-packages/{name}/" in maps or f"site-packages/{name}.libs/" in maps}


def test_the_api_role_serves_jobs_without_loading_the_model_stack(redis_server: RedisServer, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, redis_server.url, model="micro")
    try:
        api = cluster.start("api", "api")
        api.wait_ready()
        with httpx.Client(base_url=api.url, timeout=30) as client:
            job = client.post("/v1/videos", json={"prompt": "a red circle moving right"}).json()
            assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "queued"
            assert client.get("/v1/models").status_code == 200
            assert client.post(f"/v1/videos/{job['id']}/cancel").json()["status"] == "cancelled"
        assert loaded_packages(api.popen.pid) == set()
    finally:
        cluster.stop()


def test_the_check_sees_a_process_that_loaded_torch() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import sys, torch; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        wait_until(lambda: "torch" in loaded_packages(process.pid), timeout=60)
    finally:
        process.terminate()
        process.wait(30)


def test_the_api_role_builds_a_front_and_no_worker(redis_server: RedisServer, tmp_path: Path) -> None:
    from reelserve.distributed import ApiServer, WorkerServer
    from reelserve.engine.engine import Engine
    from reelserve.engine.front import VideoFront
    from reelserve.settings import Settings

    settings = Settings(model="tiny", device="cpu", redis_url=redis_server.url, data_dir=tmp_path)
    api, worker = ApiServer(settings), WorkerServer(settings)
    try:
        assert type(api.engine) is VideoFront  # no batch loop, pipeline thread or leases
        assert isinstance(worker.engine, Engine) and worker.engine.worker.runner is None
    finally:
        for server in (api, worker):
            server.sync_redis.close()
