"""Fixtures of the job store and broker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support import RedisServer


@pytest.fixture
def peek(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client for the test to look at what the code under test wrote to Redis."""
    c = redis.Redis(port=redis_server.port, decode_responses=True)
    yield c
    c.close()
