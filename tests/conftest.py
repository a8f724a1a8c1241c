"""Shared fixtures: a tiny model loaded once, and a real server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RunningServer, serve

from reelserve.models import LoadedModel, LoadOptions, load_model


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model("tiny", LoadOptions(device="cpu"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(tmp_path / "data") as running:
        yield running
