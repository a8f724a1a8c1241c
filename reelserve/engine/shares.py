"""Reserved shares: a tier with ``reserved_share`` r that has work queued gets at least r of the
pipeline time while more urgent work competes with it, so a flood cannot starve it.

Kept as credit (deficit round robin over pipeline seconds) rather than as a share of a sliding
window: a window remembers service from before the flood, so a tier that ran alone a minute ago
would be starved now until its old service aged out, while the admission estimate promised it its
share from the start. With credit, a waiting level earns r of every batch that runs, spends a whole
batch when one is opened for it, and keeps neither credit nor debt once its queue is empty.

A share is a floor, raised while a level's queued jobs need more to meet their deadlines (work
admitted just before a flood of more urgent work: ``set_pressure``), up to ``BOOST_CAP``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

BOOST_CAP = 0.5  # the most of the pipeline a level's deadlines can raise its share to
_BOOST_MARGIN = 1.2  # raise it a little above the bare need: batches are not fluid

class ReservedShares:
    """Which level is owed pipeline time, and what share recent time went to each level.

    :param reserved: level -> share of pipeline time kept for it (levels without one are absent).
    :param window_s: the window of ``share_above`` (what more urgent levels actually got lately).
    """

    def __init__(
        self, reserved: dict[int, float], window_s: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reserved = {level: share for level, share in reserved.items() if share > 0}
        self.window_s = window_s
        self._clock = clock
        self._served: deque[tuple[float, int, float]] = deque()  # (when, level, seconds)
        self.credit: dict[int, float] = dict.fromkeys(self.reserved, 0.0)  # pipeline seconds owed to a level
        self.current: dict[int, float] = dict(self.reserved)  # the share now: reserved, or raised by deadlines

    def set_pressure(self, pressure: dict[int, float]) -> None:
        """``pressure``: level -> share of the pipeline its queued jobs need to meet their deadlines."""
        for level, share in self.reserved.items():
            need = min(pressure.get(level, 0.0) * _BOOST_MARGIN, max(share, BOOST_CAP))
            self.current[level] = max(share, need)

    def record(
        self, seconds_by_level: dict[int, float], depth_by_level: dict[int, int], owed: int | None = None
    ) -> None:
        """A batch ran: ``seconds_by_level`` is its pipeline time split over its rows' levels,
        ``depth_by_level`` what is still queued, ``owed`` the level it was opened for (None: it was
        opened by the most urgent queued level)."""
        now = self._clock()
        for level, seconds in seconds_by_level.items():
            self._served.append((now, level, seconds))
        self._expire(now)
        total = sum(seconds_by_level.values())
        opener = owed if owed is not None else min(seconds_by_level, default=None)
        for level, share in self.current.items():
            if depth_by_level.get(level, 0) == 0:
                self.credit[level] = 0.0  # nothing waiting: no banking for a later flood, no debt either
            elif level == owed:
                self.credit[level] += share * total - total
            elif level != opener:  # it waited while another level ran
                self.credit[level] += share * total

    def owed_seconds(self, level: int) -> float:
        """How long a batch opened for ``level``'s share runs before its credit is spent (each second
        of it costs the level ``1 - share`` of credit): a share is owed time, not a whole batch."""
        share = self.current.get(level, 0.0)
        return max(0.0, self.credit.get(level, 0.0)) / max(1e-9, 1.0 - share)

    def owed_level(self, depth_by_level: dict[int, int]) -> int | None:
        """The queued level with the most credit, or None when none is owed time (priority decides)."""
        owed = [
            (credit, level)
            for level, credit in self.credit.items()
            if credit > 0 and depth_by_level.get(level, 0) > 0
        ]
        return max(owed)[1] if owed else None

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

    def _expire(self, now: float) -> None:
        while self._served and self._served[0][0] < now - self.window_s:
            self._served.popleft()
