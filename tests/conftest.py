"""Shared fixtures: a tiny model loaded once, a real server per test, a private Redis per test, a
private moto S3 server per test module."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Receiver, RedisServer, RunningServer, free_port, serve, wait_until

from reelserve.models import LoadedModel, LoadOptions, load_model


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model("tiny", LoadOptions(device="cpu"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(tmp_path / "data") as running:
        yield running


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for this test; fails (not skips) when redis-server is not installed."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``moto.server`` on a free loopback port, with dummy credentials in the environment.

    Fails (does not skip) if the server will not start: these tests exist to exercise real HTTP."""
    with pytest.MonkeyPatch.context() as env:
        # Dummy credentials, and nothing of the developer's own AWS setup leaking in.
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        missing = str(tmp_path_factory.mktemp("aws") / "absent")
        env.setenv("AWS_CONFIG_FILE", missing)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"):
            env.delenv(name, raising=False)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path_factory.mktemp("moto") / "moto.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"moto server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/moto-api/", timeout=0.5)
            except httpx.TransportError:
                return False
            return True

        try:
            wait_until(answers, timeout=15)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as running:
        yield running
