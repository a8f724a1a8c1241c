"""Shared by the benchmarks: a real server process (and a private Redis) on a free loopback port, and a
table printer."""

from __future__ import annotations

import math
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServerProcess:
    url: str
    pid: int
    data_dir: Path


@contextmanager
def server(*flags: str, timeout: float = 180) -> Iterator[str]:
    """Start ``reelserve serve`` in its own process; yields its base URL once /readyz says ready."""
    with server_process(*flags, timeout=timeout) as running:
        yield running.url


@contextmanager
def server_process(*flags: str, timeout: float = 180, role: str = "serve") -> Iterator[ServerProcess]:
    """``server``, also telling its pid (for RSS) and data directory (for the saved cost model).
    ``role``: ``serve``, or the distributed ``api`` or ``worker`` (pass ``--redis-url``)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        command = [sys.executable, "-m", "reelserve", role, "--port", str(port), "--data-dir", data_dir,
                   "--log-level", "warning", *flags]
        # The log goes to a file, not a pipe: a pipe nobody reads during the run fills up and
        # then blocks the server at its next log line, which would time the pipe, not the server.
        log_path = Path(data_dir) / "server.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(log_path.read_text(errors="replace")[-3000:] or "server died")
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not become ready")
                time.sleep(0.1)
            yield ServerProcess(url, process.pid, Path(data_dir))
        finally:
            process.terminate()
            process.wait(30)


def measure_capacity(url: str, jobs: int, params: dict) -> float:
    """Completed jobs per second of a closed burst of ``jobs`` same-shape jobs submitted at once."""
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        ids = [
            client.post("/v1/videos", json={"prompt": f"capacity probe {i}", "seed": i, **params}).json()["id"]
            for i in range(jobs)
        ]
        pending = set(ids)
        while pending:
            for job_id in list(pending):
                if client.get(f"/v1/videos/{job_id}").json()["status"] in ("completed", "failed", "cancelled"):
                    pending.discard(job_id)
            if time.perf_counter() - started > 600:
                raise TimeoutError("capacity burst did not finish in 600 s")
            time.sleep(0.1)
        return jobs / (time.perf_counter() - started)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def redis_server(timeout: float = 20) -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port, no persistence; yields its URL once it answers."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not on PATH (apt install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {process.returncode}")
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not answer")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            process.terminate()
            process.wait(10)


PROMPT_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PROMPT_SHAPES = ("circle", "square", "triangle")
PROMPT_MOTIONS = ("moving right", "moving left", "moving up", "moving down")


def micro_prompt(i: int) -> str:
    """The ``i``-th of 72 distinct prompts in the micro model's vocabulary (then they repeat)."""
    return f"a {PROMPT_COLOURS[i % 6]} {PROMPT_SHAPES[i // 6 % 3]} {PROMPT_MOTIONS[i // 18 % 4]}"


def settle() -> None:
    """Let the machine's last load sample pass before a timed lone request: a server lends a lone
    batch every lane's threads only when no other process kept half a core busy over its last
    sample (``LOAD_SAMPLE_S``, 0.5 s), and a bench that has just run the model in-process, or a
    ``generate`` process, is such a process."""
    time.sleep(0.6)


def machine() -> str:
    import os

    import torch

    return f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]
