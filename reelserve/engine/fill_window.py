"""The fill window: how long a batch that is not full waits for more rows of its batch key, when
``--max-wait-ms`` leaves it to the scheduler.

Waiting is paid by every row already in the batch, so it is bounded by a share of what the key's
last batch took: 5 %, from 2 ms to 2 s, and 50 ms before any ran. On the micro model's two CPU
lanes a batch of four takes about 2 s, so about 100 ms: enough for the clients of the last batch to
come back with their next requests, which arrive spread over about 100 ms as their videos are
written one by one (with 50 ms, 8 closed-loop clients left batches of 3, 2 and 1 behind and got
2.5-2.6 videos/s instead of 2.7-2.8; docs/benchmarks.md, "The hot path").

And it is waited only when a companion may come. A request that came more than the last batch's
time after the one before it (of its key) is alone: one client at a time, or traffic sparser than
a batch lasts. Waiting then buys nothing and costs the request the whole window (a lone tiny
request at 128x128 paid 5.5-8 ms of its 0.15 s; docs/benchmarks.md), so such a batch takes what
is queued and starts. A worker on a shared queue does not see arrivals (another process takes
them) and always waits the share.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

FILL_WINDOW_SHARE = 0.05
FILL_WINDOW_S = (0.002, 2.0)
FIRST_FILL_WINDOW_S = 0.05


class FillWindow:
    """Called with a batch key as its batch opens; returns the seconds it may wait for joiners."""

    def __init__(self, sees_arrivals: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._sees_arrivals = sees_arrivals
        self._clock = clock
        self._last_call_s: dict[str, float] = {}  # batch key -> seconds its last batch took
        self._arrivals: dict[str, deque[float]] = {}  # batch key -> its last two arrival times

    def arrived(self, batch_key: str) -> None:
        """A job of ``batch_key`` joined the queue now."""
        self._arrivals.setdefault(batch_key, deque(maxlen=2)).append(self._clock())

    def batch_took(self, batch_key: str, seconds: float) -> None:
        """A batch of ``batch_key`` ran in ``seconds`` (a failed batch's time says nothing: not called)."""
        self._last_call_s[batch_key] = seconds

    def __call__(self, batch_key: str) -> float:
        last = self._last_call_s.get(batch_key)
        if last is None:
            return FIRST_FILL_WINDOW_S
        low, high = FILL_WINDOW_S
        if self._sees_arrivals and not self._companion_likely(batch_key, last):
            return 0.0
        return min(max(FILL_WINDOW_SHARE * last, low), high)

    def _companion_likely(self, batch_key: str, horizon_s: float) -> bool:
        """The key's last two jobs arrived within ``horizon_s`` of each other."""
        arrivals = self._arrivals.get(batch_key, ())
        return len(arrivals) == 2 and arrivals[1] - arrivals[0] <= horizon_s
