"""Shared fixtures: a tiny model loaded once, a real server per test, a private Redis per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RedisServer, RunningServer, serve

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
