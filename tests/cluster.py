"""Real processes on loopback for the distributed mode: ``reelserve api`` and ``reelserve worker``
subprocesses sharing one Redis and one storage directory. Used by tests/distributed and bench/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from reelserve.redis_names import BROKER_GROUP, RedisKeys


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """One ``reelserve <role>`` process; its output goes to ``log``."""

    def __init__(self, role: str, name: str, env: dict[str, str], log: Path) -> None:
        self.role, self.name, self.port = role, name, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "reelserve", role, "--port", str(self.port)],
                env={**env, "REELSERVE_WORKER_NAME": name},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a kill of the test run's process group leaves it alone, and v.v.
            )

    def ready(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples whose line starts with ``name`` on its /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def kill(self) -> None:
        """kill -9: no drain, no hand-back; its jobs stay pending in Redis for others to reclaim."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = self.stacks()
            self.kill()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s; what it waited for:\n{stacks}") from None

    def stacks(self, timeout: float = 10.0) -> str:
        """The process's threads and asyncio tasks, from its log, after ``kill -USR1``
        (``reelserve.diagnostics``); for a failure's message."""
        from support import wait_until

        before = self.log.stat().st_size

        def written() -> str:
            return self.log.read_bytes()[before:].decode(errors="replace")

        def dumped() -> str:  # the tasks come last: once one is written, the dump is there
            text = written()
            return text if "task " in text or "no event loop" in text else ""

        os.kill(self.popen.pid, signal.SIGUSR1)
        try:
            return wait_until(dumped, timeout=timeout)[-8000:]
        except AssertionError:
            return written()[-8000:] or "(nothing written)"


class Cluster:
    """API and worker processes of the model ``tiny`` on ``redis_url``. ``settings`` are extra
    ``REELSERVE_*`` values by setting name (``claim_idle_s=1.5``)."""

    def __init__(self, workdir: Path, redis_url: str, **settings: object) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.redis_url = workdir, redis_url
        base = {
            "model": "tiny", "device": "cpu", "data_dir": workdir / "data", "redis_url": redis_url,
            "warmup_runs": 1, "cache_enabled": "false", "claim_idle_s": 1.5, "max_wait_ms": 100,
            "log_level": "warning",
        }
        self.env = {**os.environ, **{f"REELSERVE_{k.upper()}": str(v) for k, v in {**base, **settings}.items()}}
        self.processes: list[Process] = []
        self.keys = RedisKeys(str(settings.get("redis_namespace", "reelserve")))

    def start(self, role: str, name: str) -> Process:
        process = Process(role, name, self.env, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def holder(self, job_id: str) -> str | None:
        """The worker whose pending list holds ``job_id``'s queue entry (read ahead or running)."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            entry = client.hget(self.keys.broker_entries("tiny"), job_id)
            if entry is None:
                return None
            level, entry_id = str(entry).split("|")
            pending = client.xpending_range(self.keys.stream("tiny", int(level)), BROKER_GROUP, entry_id, entry_id, 1)
            return str(pending[0]["consumer"]) if pending else None
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.kill()
