"""`kill -USR1` makes a server print its threads' and asyncio tasks' stacks, and it keeps serving."""

from __future__ import annotations

from pathlib import Path

import httpx
from cluster import Cluster
from support import RedisServer


def test_sigusr1_prints_threads_and_tasks_and_the_server_carries_on(redis_server: RedisServer, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, redis_server.url, model="micro")
    try:
        api = cluster.start("api", "api")
        api.wait_ready()
        text = api.stacks()
        assert "most recent call first" in text  # faulthandler's thread dump
        assert "task " in text and "serve" in text  # the asyncio tasks, uvicorn's serving task among them
        assert httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200
    finally:
        cluster.stop()
