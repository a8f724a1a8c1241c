"""A circuit breaker for the pipeline: stop admitting work while batches keep failing.

closed --(failure_threshold consecutive failures)--> open --(cooldown_s)--> half_open
half_open admits exactly one probe request; its batch succeeding closes the circuit, failing opens it
again. A probe that never reports back (a cache hit, a cancelled job) is replaced after
``probe_timeout_s``. Not thread-safe: call it from one thread (the event loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    closed = "closed"  # admitting everything
    open = "open"  # refusing everything until the cooldown has passed
    half_open = "half_open"  # admitting one probe at a time, refusing the rest


class CircuitBreaker:
    """Counts consecutive batch failures and decides whether to admit a request.

    :param failure_threshold: consecutive failed batches that open the circuit (at least 1).
    :param cooldown_s: seconds the circuit stays open before it admits a probe.
    :param probe_timeout_s: seconds to wait for the admitted probe's outcome before admitting another.
    :param clock: monotonic seconds; tests pass a fake.
    :param on_change: called with the new state on every transition (for metrics).
    """

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        probe_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s < 0 or probe_timeout_s <= 0:
            raise ValueError("cooldown_s must be >= 0 and probe_timeout_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self.clock = clock
        self.on_change = on_change
        self.consecutive_failures = 0
        self._state = CircuitState.closed
        self._opened_at = 0.0
        self._probe_admitted_at: float | None = None  # half-open only: when the outstanding probe got in

    @property
    def state(self) -> CircuitState:
        self._advance()
        return self._state

    @property
    def ready(self) -> bool:
        """False while open. Half-open counts as ready so that a load balancer sends the probe."""
        return self.state is not CircuitState.open

    def retry_after(self) -> float:
        """Seconds until a request could be admitted; 0.0 when one would be now."""
        state = self.state
        now = self.clock()
        if state is CircuitState.open:
            return max(0.0, self._opened_at + self.cooldown_s - now)
        if state is CircuitState.half_open and self._probe_admitted_at is not None:
            return max(0.0, self._probe_admitted_at + self.probe_timeout_s - now)
        return 0.0

    def admit(self) -> float | None:
        """None when the request may go in (in half-open it becomes the probe); otherwise the
        seconds to put in Retry-After."""
        wait = self.retry_after()
        if wait > 0:
            return wait
        if self._state is CircuitState.half_open:
            self._probe_admitted_at = self.clock()
        return None

    def record_success(self) -> None:
        """A batch ran through. Closes the circuit from any state: whoever admitted the batch, the
        pipeline just worked."""
        self.consecutive_failures = 0
        self._probe_admitted_at = None
        self._set(CircuitState.closed)

    def record_failure(self) -> None:
        """A batch failed. In half-open (the probe failed) or open (work admitted before it opened
        failing now) the cooldown starts again from now."""
        self.consecutive_failures += 1
        self._probe_admitted_at = None
        if self._state is not CircuitState.closed or self.consecutive_failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._set(CircuitState.open)

    def _advance(self) -> None:
        """The one transition time alone makes: open -> half_open once the cooldown has passed."""
        if self._state is CircuitState.open and self.clock() >= self._opened_at + self.cooldown_s:
            self._probe_admitted_at = None
            self._set(CircuitState.half_open)

    def _set(self, state: CircuitState) -> None:
        if state is self._state:
            return
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
