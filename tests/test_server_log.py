"""What ``reelserve serve`` prints: one line per finished job (never its prompt), no progress bars."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from support import free_port, wait_until


def test_one_line_per_job_and_no_progress_bars(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelserve", "serve", "--model", "tiny", "--device", "cpu", "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--warmup-runs", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return httpx.get(url + "/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=90, interval=0.2)
            body = {"prompt": "a secret plan", "size": "32x32", "num_frames": 5, "num_inference_steps": 3, "seed": 1}
            job = httpx.post(url + "/v1/videos/sync", json=body, timeout=60).json()
            again = httpx.post(url + "/v1/videos/sync", json=body, timeout=60).json()
        finally:
            process.terminate()
            process.wait(timeout=60)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if "reelserve.jobs" in line]
    assert len(lines) == 2, text
    assert f"{job['id']} completed: 32x32, 5 frames, 3 steps, batch 1" in lines[0]
    assert f"{again['id']} completed from the cache" in lines[1]
    assert "secret" not in text
    assert "it/s]" not in text and "Loading pipeline components" not in text
