"""The distributed API role is the front only: `reelserve api`, started as users start it and
serving jobs, never loads torch, diffusers, transformers or PyAV (the workers run the model and
write the videos). Read from the process's own memory map, so any path that imports them shows:
torch and PyAV map their native libraries; diffusers and transformers are pure Python and import
torch, so torch stands for them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from support import RedisServer, free_port, wait_until

HEAVY = ("torch", "av")


def loaded_packages(pid: int) -> set[str]:
    """The heavy packages whose native libraries the process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in HEAVY if f"site-packages/{name}/" in maps or f"site-packages/{name}.libs/" in maps}


@contextmanager
def running(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else "exited"
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_api_role_serves_jobs_without_loading_the_model_stack(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "reelserve", "api", "--port", str(port), "--redis-url", redis_server.url,
               "--data-dir", str(tmp_path / "data"), "--model", "micro"]
    with running(command) as api, httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: ready(url, api), timeout=60)
        job = client.post("/v1/videos", json={"prompt": "a red circle moving right"}).json()
        assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "queued"
        assert client.get("/v1/models").status_code == 200
        assert client.post(f"/v1/videos/{job['id']}/cancel").json()["status"] == "cancelled"
        assert loaded_packages(api.pid) == set()


def test_the_check_sees_a_process_that_loaded_torch() -> None:
    with running([sys.executable, "-c", "import sys, torch; sys.stdin.read()"]) as process:
        wait_until(lambda: "torch" in loaded_packages(process.pid), timeout=60)
