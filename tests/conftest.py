"""Shared fixtures: a tiny model loaded once, and real uvicorn servers on free loopback ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from reelserve.models import LoadedModel, LoadOptions, load_model
from reelserve.server import Server
from reelserve.settings import Settings


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model("tiny", LoadOptions(device="cpu"))


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
    """A real server (uvicorn, loopback, free port) in a thread; ready when this yields."""
    settings = Settings(data_dir=data_dir, port=free_port(), device="cpu", **{"warmup_runs": 1, **overrides})
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(tmp_path / "data") as running:
        yield running
