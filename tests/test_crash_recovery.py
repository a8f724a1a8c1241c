"""kill -9 the real server process mid-work; a restart finishes every accepted job exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from support import free_port, wait_until

from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.storage.local import LocalStorage
from reelserve.video import probe_mp4


@contextmanager
def server_process(data_dir: Path, port: int, *more: str) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "reelserve", "serve", "--port", str(port), "--data-dir", str(data_dir),
        "--device", "cpu", "--max-batch-size", "2", "--max-wait-ms", "0", "--log-level", "warning", *more,
    ]
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _ready(port) or process.poll() is not None, timeout=120)
        assert process.poll() is None, (data_dir.parent / f"server-{port}.log").read_text()
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        log.close()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_kill_9_then_restart_completes_every_job_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    body = {"size": "128x128", "num_frames": 17, "num_inference_steps": 50}
    with server_process(data_dir, port) as process:
        base = f"http://127.0.0.1:{port}"
        ids = [
            httpx.post(f"{base}/v1/videos", json={"prompt": f"job {i}", "seed": i, **body}, timeout=10).json()["id"]
            for i in range(6)
        ]

        def statuses() -> list[str]:
            return [httpx.get(f"{base}/v1/videos/{i}", timeout=10).json()["status"] for i in ids]

        wait_until(lambda: "in_progress" in statuses(), timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    store = SqliteJobStore(data_dir / "jobs.sqlite3")
    before = [store.get(i).status.value for i in ids]  # type: ignore[union-attr]
    store.close()
    assert "queued" in before and "in_progress" in before, before

    with server_process(data_dir, free_port()) as process:
        store = SqliteJobStore(data_dir / "jobs.sqlite3")
        try:
            wait_until(lambda: all(store.get(i).status.value == "completed" for i in ids), timeout=180)  # type: ignore[union-attr]
            storage = LocalStorage(data_dir / "files")
            for job_id in ids:
                completions = [t for t in store.transitions(job_id) if t[1] == "completed"]
                assert len(completions) == 1, store.transitions(job_id)
                job = store.get(job_id)
                assert job is not None and job.video_key is not None  # a rerun writes under its attempt's keys
                info = probe_mp4(storage.get(job.video_key))
                assert (info.frames, info.width, info.height) == (17, 128, 128)
            interrupted = [i for i, s in zip(ids, before, strict=True) if s == "in_progress"]
            for job_id in interrupted:
                assert ("in_progress", "queued") in store.transitions(job_id)
        finally:
            store.close()


def test_several_models_each_finish_their_own_jobs_after_a_kill_9(tmp_path: Path) -> None:
    """Each model's engine re-queues only its own model's jobs: after a restart every job completes once,
    on the model it asked for."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    models = ("--model", "micro", "--model", "tiny", "--device-memory-mb", "110")
    port = free_port()
    with server_process(data_dir, port, *models) as process:
        base = f"http://127.0.0.1:{port}"
        ids = [httpx.post(f"{base}/v1/videos", json={"prompt": f"job {i}", "seed": i, "model": model,
                                                      "num_inference_steps": 40}, timeout=10).json()["id"]
               for i, model in enumerate(["micro", "tiny"] * 3)]
        wait_until(lambda: any(httpx.get(f"{base}/v1/videos/{i}", timeout=10).json()["status"] == "in_progress"
                               for i in ids), timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    with server_process(data_dir, free_port(), *models):
        store = SqliteJobStore(data_dir / "jobs.sqlite3")
        try:
            wait_until(lambda: all(store.get(i).status.value == "completed" for i in ids), timeout=180)  # type: ignore[union-attr]
            storage = LocalStorage(data_dir / "files")
            for job_id in ids:
                job = store.get(job_id)
                assert job is not None and job.video_key is not None
                assert len([t for t in store.transitions(job_id) if t[1] == "completed"]) == 1
                # Made by its own model: the video is what that model's runner makes of the job's params.
                video, other = storage.get(job.video_key), {"micro": "tiny", "tiny": "micro"}[job.params.model]
                assert _distance(video, job.params, job.params.model) < _distance(video, job.params, other) / 2
        finally:
            store.close()


def _distance(mp4: bytes, params: Any, model_name: str) -> float:
    """Mean absolute difference (0-1) between a stored video and ``params`` run afresh on ``model_name``."""
    import io

    import av
    import numpy as np
    import torch

    from reelserve.engine.runner import PipelineRunner
    from reelserve.models import LoadOptions, load_model

    model = load_model(model_name, LoadOptions(device="cpu"))
    runner = PipelineRunner(model.pipeline, torch.device("cpu"), model.max_sequence_length)
    expected = runner.run([("again", params)]).frames["again"]
    with av.open(io.BytesIO(mp4)) as container:
        got = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]) / 255.0
    return float(np.abs(got - expected).mean())
