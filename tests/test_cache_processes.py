"""Two real server processes (``python -m reelserve serve``) sharing one Redis and one data directory: a
video made by one is a cache hit in the other, found through Redis (L2) after the pub/sub "add" event
reached the other's bloom filter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from support import RedisServer, free_port, wait_until

NAMESPACE = "shop-1"
BODY = {"prompt": "two processes, one cache", "size": "32x32", "num_frames": 5, "num_inference_steps": 2, "seed": 5}


@contextmanager
def server_process(data_dir: Path, redis_url: str, log: Path) -> Iterator[str]:
    """A server subprocess (tiny model, no warm-up); yields its base URL once it is started (not yet ready)."""
    port = free_port()
    command = [
        sys.executable, "-m", "reelserve", "serve", "--model", "tiny", "--device", "cpu", "--warmup-runs", "0",
        "--port", str(port), "--data-dir", str(data_dir), "--redis-url", redis_url, "--log-level", "warning",
        "--redis-namespace", NAMESPACE,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def sync(url: str, body: dict) -> dict:
    video = httpx.post(f"{url}/v1/videos/sync", json=body, timeout=120).json()
    assert video["status"] == "completed", video
    return video


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_video_made_by_one_process_is_an_l2_hit_in_another(tmp_path: Path, redis_server: RedisServer) -> None:
    data_dir = tmp_path / "shared-data"  # processes that share a Redis must share storage
    with ExitStack() as stack:
        # Both start before anything is cached: B learns of A's entry only through pub/sub.
        a, b = (stack.enter_context(server_process(data_dir, redis_server.url, tmp_path / f"{n}.log")) for n in "ab")
        try:
            wait_until(lambda: ready(a) and ready(b), timeout=180, interval=0.25)
        except AssertionError:
            raise AssertionError((tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()) from None

        # B's bloom filter is live: its own miss never reached Redis.
        assert sync(b, {**BODY, "seed": 99})["cached"] is False
        assert metric(b, "reelserve_cache_bloom_negatives_total") == 1
        assert metric(b, 'reelserve_cache_requests_total{level="l2",result="miss"}') == 0

        made = sync(a, BODY)
        assert made["cached"] is False
        repeat = sync(a, BODY)
        assert repeat["cached"] is True and repeat["cache_source_id"] == made["id"]
        assert metric(a, 'reelserve_cache_requests_total{level="l1",result="hit"}') == 1

        elsewhere = httpx.post(f"{b}/v1/videos", json=BODY, timeout=30).json()
        assert elsewhere["status"] == "completed" and elsewhere["cached"] is True
        assert elsewhere["cache_source_id"] == made["id"]
        assert metric(b, 'reelserve_cache_requests_total{level="l2",result="hit"}') == 1
        assert metric(b, "reelserve_cache_model_seconds_saved_total") > 0
        copy = httpx.get(f"{b}/v1/videos/{elsewhere['id']}/content", timeout=30)
        original = httpx.get(f"{a}/v1/videos/{made['id']}/content", timeout=30)
        assert copy.status_code == 200 and copy.content == original.content

        # A second repeat in B is now in B's own tier.
        assert httpx.post(f"{b}/v1/videos", json=BODY, timeout=30).json()["cached"] is True
        assert metric(b, 'reelserve_cache_requests_total{level="l1",result="hit"}') == 1

        # Everything the cache wrote is under the server's namespace and its hash tag.
        with redis_server.client() as client:
            keys = {key.decode() for key in client.keys("*")}
        assert keys and all(key.startswith("{shop-1}:cache:") for key in keys), keys
