"""Test helpers: real uvicorn servers on free loopback ports, polling with deadlines, a gated pipeline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from reelserve.server import Server
from reelserve.settings import Settings


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
    def __init__(self, server: Server, url: str) -> None:
        self.server = server
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=60)


@contextmanager
def serve(data_dir: Path, **overrides: object) -> Iterator[RunningServer]:
    """A real server (uvicorn, loopback, free port) in a thread; ready when this yields.

    Serves ``tiny`` unless told otherwise: these tests are about the server, and tiny is the fastest model.
    """
    defaults: dict[str, object] = {"warmup_runs": 1, "model": "tiny"}
    settings = Settings(data_dir=data_dir, port=free_port(), device="cpu", **{**defaults, **overrides})
    server = Server(settings)
    config = uvicorn.Config(server.app, host="127.0.0.1", port=settings.port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    running = RunningServer(server, f"http://127.0.0.1:{settings.port}")
    try:
        wait_until(lambda: uv.started and server.engine.ready, timeout=60)
        yield running
    finally:
        running.client.close()
        uv.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "server thread did not stop"


class GatedPipeline:
    """The real pipeline, but each call waits at its start until the test opens ``gate``.

    Lets a test hold the engine busy so later jobs are provably queued, without sleeping."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.scheduler = real.scheduler  # type: ignore[attr-defined]
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, **kwargs: object) -> object:
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        if any("boom" in p for p in kwargs["prompt"]):  # type: ignore[attr-defined]
            raise RuntimeError("boom: the pipeline fell over")
        return self.real(**kwargs)  # type: ignore[operator]

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()


def gate_pipeline(running: RunningServer) -> GatedPipeline:
    runner = running.server.engine.runner
    assert runner is not None
    gated = GatedPipeline(runner.pipeline)
    runner.pipeline = gated
    return gated
