"""The API tests run against both modes: the embedded server, and an API server with a worker on
Redis (the distributed mode, both in this process, each on its own event loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RedisServer, RunningServer, serve, serve_distributed


@pytest.fixture(params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    if request.param == "embedded":
        with serve(tmp_path / "data") as running:
            yield running
        return
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        with serve_distributed(tmp_path / "data", redis.url) as running:
            yield running
    finally:
        redis.stop()
