"""Test helpers: real uvicorn servers and a real Redis on free loopback ports, polling with deadlines,
a gated pipeline."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import redis
import uvicorn

from reelserve.schemas import GenerationParams, ModelLimits
from reelserve.server import Server, serving_config
from reelserve.several_models import SeveralModelsServer
from reelserve.settings import Settings
from family_wrappers import GatedFamily, StepRecorder
from stuck_threads import connections_of, other_threads, stack_of


# Two tenants and an admin, for the tests of who may see what.
ALICE, BOB, ADMIN = "alice-key", "bob-key", "admin-key"
TENANT_KEYS: dict[str, list[str]] = {"api_keys": [ALICE, BOB], "admin_keys": [ADMIN]}


def auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


# Longest a test server may take to shut down: a worker's drain (5 s in these tests) and its
# hand-back (``engine.HAND_BACK_S``), with room for a loaded CI machine.
SHUTDOWN_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class RunningServer:
    """``server`` answers the API; ``worker`` runs the jobs (the same object in the embedded mode)."""

    def __init__(self, server: Server, url: str, worker: Server | None = None, worker_url: str | None = None) -> None:
        self.server = server
        self.worker = worker or server
        self.url = url
        self.worker_url = worker_url or url  # where the worker's own /metrics is
        self.client = httpx.Client(base_url=url, timeout=60)


NO_STEP_SCHEDULING = {"continuous_batching": False, "preemption": False}
STEP_SCHEDULING = {"continuous_batching": True, "preemption": True}


@contextmanager
def serve(data_dir: Path, **overrides: object) -> Iterator[RunningServer]:
    """A real server (uvicorn, loopback, free port) in a thread; ready when this yields.

    Serves ``tiny`` unless told otherwise: these tests are about the server, and tiny is the fastest model.
    """
    # One lane, and no joining or preemption of running batches: these tests hold "the" pipeline to
    # keep later jobs queued; the lane and step-scheduling tests ask for more.
    defaults: dict[str, object] = {"warmup_runs": 1, "model": "tiny", "pipeline_lanes": 1, **NO_STEP_SCHEDULING}
    settings = Settings(data_dir=data_dir, port=free_port(), device="cpu", **{**defaults, **overrides})
    server = (SeveralModelsServer if len(settings.models) > 1 else Server)(settings)
    uv = uvicorn.Server(serving_config(server.app, settings.model_copy(update={"log_level": "warning"})))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    running = RunningServer(server, f"http://127.0.0.1:{settings.port}")
    try:
        engines = getattr(server, "engines", None) or {"": server.engine}
        wait_until(lambda: uv.started and all(engine.ready for engine in engines.values()), timeout=60)
        yield running
    finally:
        running.client.close()
        uv.should_exit = True
        thread.join(timeout=SHUTDOWN_S)
        assert not thread.is_alive(), "server thread did not stop"


@contextmanager
def _uvicorn(app: object, settings: Settings) -> Iterator[uvicorn.Server]:
    uv = uvicorn.Server(serving_config(app, settings.model_copy(update={"log_level": "warning"})))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        yield uv
    finally:
        uv.should_exit = True
        thread.join(timeout=SHUTDOWN_S)
        assert not thread.is_alive(), (
            f"server thread did not stop:\n{stack_of(thread)}\n{connections_of(uv)}\n{other_threads()}"
        )


@contextmanager
def serve_distributed(data_dir: Path, redis_url: str, **overrides: object) -> Iterator[RunningServer]:
    """The distributed mode in this process: an API server and a worker, each its own uvicorn (and
    event loop) in a thread, sharing a Redis and a storage directory. Ready when this yields."""
    from reelserve.distributed import ApiServer, WorkerServer
    from reelserve.several_models import SeveralModelsApi, SeveralModelsWorker

    # A short drain: a test that ends with a batch held at its gate must not wait out the default. No
    # joining or preemption of running batches, as in ``serve``.
    defaults: dict[str, object] = {"warmup_runs": 1, "model": "tiny", "claim_idle_s": 2.0, "drain_timeout_s": 5.0,
                                   "pipeline_lanes": 1, **NO_STEP_SCHEDULING}
    common = {"data_dir": data_dir, "device": "cpu", "redis_url": redis_url, **defaults, **overrides}
    several = "," in str(common["model"])
    api = (SeveralModelsApi if several else ApiServer)(Settings(port=free_port(), **common))  # type: ignore[arg-type]
    worker = (SeveralModelsWorker if several else WorkerServer)(
        Settings(port=free_port(), worker_name="worker-1", **common))  # type: ignore[arg-type]
    with _uvicorn(worker.app, worker.settings) as worker_uv, _uvicorn(api.app, api.settings) as api_uv:
        running = RunningServer(
            api, f"http://127.0.0.1:{api.settings.port}", worker, f"http://127.0.0.1:{worker.settings.port}"
        )
        try:
            engines = [*getattr(api, "engines", {"": api.engine}).values(),
                       *getattr(worker, "engines", {"": worker.engine}).values()]
            wait_until(lambda: api_uv.started and worker_uv.started and all(e.ready for e in engines), 60)
            yield running
        finally:
            running.client.close()


@contextmanager
def serve_in_mode(mode: str, tmp_path: Path, **settings: object) -> Iterator[RunningServer]:
    """``serve`` ("embedded") or ``serve_distributed`` on a private Redis ("distributed")."""
    if mode == "embedded":
        with serve(tmp_path / "data", **settings) as running:
            yield running
        return
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with serve_distributed(tmp_path / "data", redis_server.url, **settings) as running:
            yield running
    finally:
        redis_server.stop()


def final_video(running: RunningServer, video_id: str, key: str | None = None, timeout: float = 120) -> dict[str, Any]:
    """The video object once it is final (completed, failed or cancelled), read as ``key`` if given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def done() -> dict[str, Any] | None:
        video = running.client.get(f"/v1/videos/{video_id}", headers=headers).json()
        return video if video["status"] in ("completed", "failed", "cancelled") else None

    return wait_until(done, timeout=timeout)


def gate_pipeline(running: RunningServer) -> GatedFamily:
    """Gate every lane of the server's worker with one gate; returns lane 0's ``GatedFamily``."""
    lanes = running.worker.engine.runner
    assert lanes is not None
    first: GatedFamily | None = None
    for runner in lanes.runners:
        runner.family = gated = GatedFamily(runner.family, shares=first)
        first = first or gated
    assert first is not None
    return first


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence unless ``appendonly``.
    ``stop()`` and ``start()`` let a test take Redis away and bring it back (same port; empty, or as
    it was with ``appendonly``)."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.appendonly = appendonly  # AOF with fsync on every write: a restart keeps everything
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not on PATH: the cache tests need a real Redis (apt install redis-server)")
        self.executable = executable
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
             "--dir", str(self.workdir), "--logfile", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, timeout=20)
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        """``kill``: SIGKILL, a crash (with AOF and fsync always, it still loses nothing acknowledged)."""
        if self.process is None:
            return
        self.process.kill() if kill else self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        """A synchronous client, for a test to look at what the code under test wrote."""
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)


async def eventually(predicate, timeout: float = 20.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """``wait_until`` for async tests: polls without blocking the event loop. ``predicate`` may be async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class FakeClock:
    """A clock a test moves by hand: no sleeping, no flakiness."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# A micro-sized model's limits and one request, for scheduling tests that need no pipeline.
SCHEDULING_LIMITS = ModelLimits(
    spatial_multiple=16, max_width=128, max_height=128, max_frames=33, max_steps=50, default_width=64,
    default_height=64, default_frames=17, default_fps=8, default_steps=25, default_guidance=5.0,
)


def scheduling_params(steps: int) -> GenerationParams:
    return GenerationParams(
        model="m", prompt="p", width=64, height=64, num_frames=17, fps=8, num_inference_steps=steps,
        guidance_scale=5.0, seed=1,
    )


def sse_events(running: RunningServer, video_id: str) -> list[tuple[str, dict]]:
    """Every (event kind, data) of a video's SSE stream, until the server ends it."""
    events, kind = [], None
    with running.client.stream("GET", f"/v1/videos/{video_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    return events


HANG = -1  # a scripted Receiver answer: hold the request until the receiver stops (the sender times out)


class Received(NamedTuple):
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers from a script of
    ``(status, headers)`` (or ``HANG``), then 200 once the script runs out."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status, headers = receiver.script.popleft() if receiver.script else (200, {})
                if status == HANG:
                    receiver.released.wait(30)
                    return
                self.send_response(status)
                for name, value in {"content-length": "0", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # listening once constructed
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/reelserve"
        # A short poll interval only makes shutdown() return sooner; nothing waits on it otherwise.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def answer(self, *answers: int | tuple[int, dict[str, str]]) -> None:
        self.script.extend(a if isinstance(a, tuple) else (a, {}) for a in answers)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[Receiver]:
        receiver = cls()
        receiver.thread.start()
        try:
            yield receiver
        finally:
            receiver.stop()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
