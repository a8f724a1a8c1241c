"""Per-tenant request limits: requests per minute (a token bucket) and concurrent jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

REQUESTS_PER_MINUTE = "requests_per_minute"
CONCURRENT_JOBS = "concurrent_jobs"

# An empty bucket refills completely in one minute whatever the rate (rpm tokens at rpm/60 per second).
_REFILL_S = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # clock reading when ``tokens`` was last brought up to date


class RateLimiter:
    """Decides whether a tenant may submit one more request.

    Buckets live in a TTL cache that forgets a tenant a minute after its last request: by then its
    bucket has refilled, and a forgotten tenant starts from a full bucket, so forgetting it changes
    nothing. Past ``max_tenants`` the least recently seen are forgotten early, which at worst gives
    them a fresh burst; memory stays bounded either way. Not thread-safe: call it from one thread.

    :param clock: monotonic seconds; tests pass a fake.
    :param max_tenants: tenants whose buckets are kept at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_tenants: int = 100_000) -> None:
        self.clock = clock
        self._buckets: TTLCache[str, _Bucket] = TTLCache(maxsize=max_tenants, ttl=_REFILL_S, timer=clock)

    def check(
        self,
        tenant: str,
        requests_per_minute: int,
        max_concurrent: int,
        active_jobs: int,
        concurrent_retry_after_s: float = 1.0,
    ) -> tuple[str, float] | None:
        """None when the request is allowed, and then it takes one token from the tenant's bucket.
        Otherwise ``(reason, retry_after_s)``, reason ``"requests_per_minute"`` or ``"concurrent_jobs"``;
        a refused request takes no token. A limit of 0 means unlimited.

        :param active_jobs: the tenant's queued and running jobs, this request not counted.
        :param concurrent_retry_after_s: what to answer when refused for concurrency (a caller with an
            estimate of when a job finishes can pass it).
        """
        if max_concurrent > 0 and active_jobs >= max_concurrent:
            return CONCURRENT_JOBS, concurrent_retry_after_s
        if requests_per_minute <= 0:
            return None
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = _Bucket(tokens=float(requests_per_minute), updated=now)
        rate = requests_per_minute / _REFILL_S  # tokens per second
        # min(): the capacity follows the tenant's current limit, which may have been lowered.
        bucket.tokens = min(float(requests_per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        self._buckets[tenant] = bucket  # set again, not only mutated: that restarts its TTL
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return REQUESTS_PER_MINUTE, (1.0 - bucket.tokens) / rate

    def __len__(self) -> int:
        """Tenants whose buckets are currently kept."""
        return len(self._buckets)
