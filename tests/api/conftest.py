"""The API tests run against both modes: the embedded server, and an API server with a worker on
Redis (the distributed mode, both in this process, each on its own event loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TENANT_KEYS, RedisServer, RunningServer, serve, serve_distributed


def _in_mode(mode: str, tmp_path: Path, **settings: object) -> Iterator[RunningServer]:
    if mode == "embedded":
        with serve(tmp_path / "data", **settings) as running:
            yield running
        return
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        with serve_distributed(tmp_path / "data", redis.url, **settings) as running:
            yield running
    finally:
        redis.stop()


@pytest.fixture(params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    yield from _in_mode(request.param, tmp_path)


@pytest.fixture(params=["embedded", "distributed"])
def keyed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """Both modes, with two tenants' API keys and an admin key (``support.ALICE``, ``BOB``, ``ADMIN``)."""
    yield from _in_mode(request.param, tmp_path, **TENANT_KEYS)
