import pytest
from support import FakeClock

from reelserve.engine.rate_limit import RateLimiter


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock)


def request(limiter: RateLimiter, tenant: str = "t", rpm: int = 60, max_concurrent: int = 0, active: int = 0):  # type: ignore[no-untyped-def]
    return limiter.check(tenant, requests_per_minute=rpm, max_concurrent=max_concurrent, active_jobs=active)


def test_burst_of_rpm_then_refused_until_one_token_is_back(limiter: RateLimiter) -> None:
    for _ in range(6):
        assert request(limiter, rpm=6) is None
    refused = request(limiter, rpm=6)
    assert refused is not None
    reason, retry_after = refused
    assert reason == "requests_per_minute"
    assert retry_after == pytest.approx(10.0)  # 6 per minute: one token every 10 s


def test_retry_after_counts_the_partial_token(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(6):
        assert request(limiter, rpm=6) is None
    clock.advance(4.0)
    assert request(limiter, rpm=6) == ("requests_per_minute", pytest.approx(6.0))


def test_refill_gives_steady_rate_not_another_burst(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(60):
        assert request(limiter, rpm=60) is None
    assert request(limiter, rpm=60) is not None
    clock.advance(1.0)
    assert request(limiter, rpm=60) is None  # one token per second
    assert request(limiter, rpm=60) is not None
    clock.advance(3.0)
    for _ in range(3):
        assert request(limiter, rpm=60) is None
    assert request(limiter, rpm=60) is not None


def test_refill_is_capped_at_rpm(limiter: RateLimiter, clock: FakeClock) -> None:
    assert request(limiter, rpm=3) is None
    clock.advance(3600.0)
    for _ in range(3):
        assert request(limiter, rpm=3) is None
    assert request(limiter, rpm=3) is not None


def test_refused_request_takes_no_token(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(2):
        assert request(limiter, rpm=2) is None
    for _ in range(5):
        assert request(limiter, rpm=2) is not None
    clock.advance(30.0)  # exactly one token back
    assert request(limiter, rpm=2) is None


def test_concurrent_jobs_limit(limiter: RateLimiter) -> None:
    assert request(limiter, rpm=0, max_concurrent=2, active=1) is None
    assert request(limiter, rpm=0, max_concurrent=2, active=2) == ("concurrent_jobs", 1.0)
    assert limiter.check("t", 0, 2, 3, concurrent_retry_after_s=7.5) == ("concurrent_jobs", 7.5)


def test_concurrency_refusal_takes_no_token(limiter: RateLimiter) -> None:
    assert request(limiter, rpm=1, max_concurrent=1, active=1) == ("concurrent_jobs", 1.0)
    assert request(limiter, rpm=1, max_concurrent=1, active=0) is None
    assert request(limiter, rpm=1, max_concurrent=1, active=0) is not None


def test_zero_means_unlimited(limiter: RateLimiter) -> None:
    for _ in range(10_000):
        assert request(limiter, rpm=0, max_concurrent=0, active=10_000) is None
    assert len(limiter) == 0  # unlimited tenants keep no bucket


def test_tenants_are_isolated(limiter: RateLimiter) -> None:
    assert request(limiter, "a", rpm=1) is None
    assert request(limiter, "a", rpm=1) is not None
    assert request(limiter, "b", rpm=1) is None


def test_lowered_limit_caps_a_full_bucket(limiter: RateLimiter) -> None:
    assert request(limiter, rpm=100) is None
    for _ in range(2):
        assert request(limiter, rpm=2) is None
    assert request(limiter, rpm=2) is not None


def test_least_recently_seen_tenant_is_forgotten_past_max_tenants(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock, max_tenants=2)
    assert request(limiter, "a", rpm=1) is None
    assert request(limiter, "b", rpm=1) is None
    assert request(limiter, "c", rpm=1) is None  # evicts a, the least recently seen
    assert len(limiter) == 2
    assert request(limiter, "c", rpm=1) is not None  # c is remembered
    assert request(limiter, "b", rpm=1) is not None  # b too
    assert request(limiter, "a", rpm=1) is None  # a was forgotten: a fresh, full bucket


def test_idle_tenant_is_forgotten_once_its_bucket_is_full(limiter: RateLimiter, clock: FakeClock) -> None:
    assert request(limiter, rpm=60) is None
    clock.advance(59.0)
    assert request(limiter, "other", rpm=60) is None
    assert len(limiter) == 2
    clock.advance(61.0)
    assert request(limiter, "other", rpm=60) is None
    assert len(limiter) == 1  # "t" idled a minute: full again, so it was dropped
