"""The API tests run against both modes: the embedded server, and an API server with a worker on
Redis (the distributed mode, both in this process, each on its own event loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import TENANT_KEYS, RunningServer, serve_in_mode


@pytest.fixture(params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_mode(request.param, tmp_path) as running:
        yield running


@pytest.fixture(params=["embedded", "distributed"])
def keyed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """Both modes, with two tenants' API keys and an admin key (``support.ALICE``, ``BOB``, ``ADMIN``)."""
    with serve_in_mode(request.param, tmp_path, **TENANT_KEYS) as running:
        yield running

