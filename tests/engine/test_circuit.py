import pytest
from support import FakeClock

from reelserve.engine.circuit import CircuitBreaker, CircuitState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def changes() -> list[CircuitState]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[CircuitState]) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3, cooldown_s=30.0, probe_timeout_s=10.0, clock=clock, on_change=changes.append
    )


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state is CircuitState.open


def test_starts_closed_and_admits(breaker: CircuitBreaker) -> None:
    assert breaker.state is CircuitState.closed
    assert breaker.ready
    assert breaker.admit() is None
    assert breaker.admit() is None
    assert breaker.retry_after() == 0.0


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker, changes: list[CircuitState]) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.closed
    assert breaker.admit() is None
    breaker.record_failure()
    assert breaker.state is CircuitState.open
    assert not breaker.ready
    assert breaker.admit() == pytest.approx(30.0)
    assert changes == [CircuitState.open]


def test_success_while_closed_resets_the_count(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.closed
    assert breaker.consecutive_failures == 2


def test_open_refuses_with_remaining_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(12.5)
    assert breaker.admit() == pytest.approx(17.5)
    assert breaker.retry_after() == pytest.approx(17.5)
    assert breaker.state is CircuitState.open


def test_half_open_after_cooldown_admits_exactly_one_probe(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[CircuitState]
) -> None:
    open_it(breaker)
    clock.advance(30.0)
    assert breaker.state is CircuitState.half_open
    assert breaker.ready  # so a load balancer sends the probe
    assert breaker.admit() is None  # the probe
    clock.advance(1.0)
    assert breaker.admit() == pytest.approx(9.0)  # everyone else waits for the probe (timeout 10 s)
    assert breaker.admit() == pytest.approx(9.0)
    assert changes == [CircuitState.open, CircuitState.half_open]


def test_probe_success_closes(breaker: CircuitBreaker, clock: FakeClock, changes: list[CircuitState]) -> None:
    open_it(breaker)
    clock.advance(30.0)
    assert breaker.admit() is None
    breaker.record_success()
    assert breaker.state is CircuitState.closed
    assert breaker.consecutive_failures == 0
    assert breaker.admit() is None
    assert breaker.admit() is None
    assert changes == [CircuitState.open, CircuitState.half_open, CircuitState.closed]


def test_probe_failure_opens_again_for_a_full_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(30.0)
    assert breaker.admit() is None
    clock.advance(4.0)
    breaker.record_failure()
    assert breaker.state is CircuitState.open
    assert not breaker.ready
    assert breaker.admit() == pytest.approx(30.0)
    clock.advance(30.0)
    assert breaker.state is CircuitState.half_open


def test_probe_that_never_reports_is_replaced_after_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(30.0)
    assert breaker.admit() is None
    clock.advance(9.9)
    assert breaker.admit() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.admit() is None  # a second probe
    assert breaker.admit() == pytest.approx(10.0)  # and again only one


def test_failure_of_earlier_work_while_open_restarts_the_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_it(breaker)
    clock.advance(20.0)
    breaker.record_failure()  # a batch admitted before the circuit opened, failing now
    assert breaker.admit() == pytest.approx(30.0)


def test_on_change_fires_only_on_transitions(breaker: CircuitBreaker, changes: list[CircuitState]) -> None:
    breaker.record_success()
    breaker.record_failure()
    assert changes == []
    open_it(breaker)
    breaker.record_failure()
    assert changes == [CircuitState.open]


def test_threshold_of_one_opens_on_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, probe_timeout_s=1.0, clock=clock)
    breaker.record_failure()
    assert breaker.admit() == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("threshold", "cooldown", "probe_timeout"), [(0, 1.0, 1.0), (1, -1.0, 1.0), (1, 1.0, 0.0)]
)
def test_invalid_settings_refused(threshold: int, cooldown: float, probe_timeout: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown, probe_timeout_s=probe_timeout)
