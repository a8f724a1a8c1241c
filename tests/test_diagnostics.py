"""`kill -USR1` makes a server print its threads' and asyncio tasks' stacks, and it keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from support import RedisServer, free_port, wait_until


def test_sigusr1_prints_threads_and_tasks_and_the_server_carries_on(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelserve", "api", "--port", str(port), "--redis-url", redis_server.url,
             "--data-dir", str(tmp_path / "data"), "--model", "micro"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60)
        os.kill(process.pid, signal.SIGUSR1)
        wait_until(lambda: "task " in log.read_text(errors="replace"), timeout=30)
        text = log.read_text(errors="replace")
        assert "most recent call first" in text  # faulthandler's thread dump
        assert "serve" in text  # uvicorn's serving task, among the tasks
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(30)
