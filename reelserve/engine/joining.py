"""Continuous batching's hand-off between the event loop and a running batch: the loop claims waiting
jobs that fit a batch already under way and ``offer``s them; the lane's thread ``take``s them at the
next step boundary, where they join the rows still running (``denoise_loop.Boundary``).

A batch ends when no row is left and nothing waits to join; ``take`` closes the queue in that same
locked moment, so an offer either joins the batch or is refused (the loop then runs the job in a
batch of its own): a claimed job is never left between the two. ``park_all`` is the other way a
batch ends early: its rows leave whole at the next boundary (preemption). ``swap`` parks one row at
the next boundary and puts a more urgent row in its slot: the batch goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from reelserve.schemas import GenerationParams

Offered = tuple[str, GenerationParams]  # (job id, params), as the runner takes rows


class JoinQueue:
    """:param limit: most rows the batch may hold at once (the batch key's limit, learned from OOMs)."""

    def __init__(self, limit: int, live: int) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self._live = live  # rows running, as of the last boundary (or the start)
        self._waiting: list[Offered] = []
        self._closed = False
        self._parking = False
        self._leaving: set[str] = set()  # rows to park at the next boundary, each for a swapped-in row
        self.joined = 0  # rows that joined so far

    def room(self) -> int:
        """Rows that may be offered now without the batch ever passing ``limit``: rows only leave a
        batch between two boundaries, so this never overstates what ``take`` will accept."""
        with self._lock:
            return 0 if self._closed else max(0, self.limit - self._live + len(self._leaving) - len(self._waiting))

    def offer(self, rows: Sequence[Offered]) -> bool:
        """Queue ``rows`` to join at the next boundary; False (nothing queued) once the batch ended or
        when they do not fit."""
        with self._lock:
            if self._closed or self._live - len(self._leaving) + len(self._waiting) + len(rows) > self.limit:
                return False
            self._waiting.extend(rows)
            return True

    def take(self, live: int) -> list[Offered]:
        """At a boundary with ``live`` rows running: the rows that join now. With none running and
        none waiting the batch is over, and the queue closes. None join a batch making way: rows
        that were waiting come back from ``close``."""
        with self._lock:
            if self._parking:
                return []
            rows, self._waiting = self._waiting, []
            self._live = live + len(rows)
            self.joined += len(rows)
            if not rows and live == 0:
                self._closed = True
            return rows

    def swap(self, leaving: str, row: Offered) -> bool:
        """At the next boundary park the running row ``leaving`` and let ``row`` join in its slot;
        False (nothing changed) once the batch ended or is making way, or while offered rows wait
        (the row to leave must be running, not about to join)."""
        with self._lock:
            if self._closed or self._waiting or leaving in self._leaving:
                return False
            self._leaving.add(leaving)
            self._waiting.append(row)
            return True

    def take_leaving(self) -> list[str]:
        """At a boundary, before ``take``: the rows to park now (swapped out)."""
        with self._lock:
            leaving, self._leaving = sorted(self._leaving), set()
            return leaving

    def park_all(self) -> None:
        """Preemption: at the next boundary every running row is parked, whole, and the batch ends
        (the rows resume later from their steps); no row joins from now on."""
        with self._lock:
            self._parking = self._closed = True

    @property
    def parking(self) -> bool:
        with self._lock:
            return self._parking

    def close(self) -> list[Offered]:
        """End the batch (it failed or is being split): refuse offers from now on; returns the rows
        that were waiting to join, which never ran."""
        with self._lock:
            self._closed = True
            rows, self._waiting = self._waiting, []
            return rows

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed
