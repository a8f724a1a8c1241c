"""Reserved shares: a tier with ``reserved_share`` r that has work queued gets at least r of the
recent pipeline time, so a flood of more urgent work cannot starve it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class ReservedShares:
    """Pipeline seconds served per level over a sliding window, and which level is owed time.

    :param reserved: level -> share of pipeline time kept for it (levels without one are absent).
    """

    def __init__(
        self, reserved: dict[int, float], window_s: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reserved = {level: share for level, share in reserved.items() if share > 0}
        self.window_s = window_s
        self._clock = clock
        self._served: deque[tuple[float, int, float]] = deque()  # (when, level, seconds)

    def record(self, seconds_by_level: dict[int, float]) -> None:
        now = self._clock()
        for level, seconds in seconds_by_level.items():
            self._served.append((now, level, seconds))
        self._expire(now)

    def served(self) -> dict[int, float]:
        self._expire(self._clock())
        totals: dict[int, float] = {}
        for _, level, seconds in self._served:
            totals[level] = totals.get(level, 0.0) + seconds
        return totals

    def share_above(self, level: int) -> float:
        """Fraction of the window's pipeline time that went to levels more urgent than ``level``."""
        served = self.served()
        total = sum(served.values())
        return sum(s for lvl, s in served.items() if lvl < level) / total if total > 0 else 0.0

    def owed_level(self, depth_by_level: dict[int, int]) -> int | None:
        """The queued level furthest below its reserved share, or None when none is owed time.

        With nothing served in the window yet there is no share to fall short of: priority decides."""
        served = self.served()
        total = sum(served.values())
        if not self.reserved or total <= 0:
            return None
        owed = [
            (share - served.get(level, 0.0) / total, level)
            for level, share in self.reserved.items()
            if depth_by_level.get(level, 0) > 0 and served.get(level, 0.0) / total < share
        ]
        return max(owed)[1] if owed else None

    def _expire(self, now: float) -> None:
        while self._served and self._served[0][0] < now - self.window_s:
            self._served.popleft()
