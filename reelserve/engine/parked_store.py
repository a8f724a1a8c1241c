"""Rows parked by preemption, kept in this worker's memory until their jobs run again (a row that
does not fit goes to storage instead, where there is a version to tie it to: ``step_scheduling``).

A batch makes way for more urgent work at a step boundary (``join_feeder``); its rows leave whole
(``denoise_loop.Boundary``) and their jobs go back to the front of their queues. When a job runs
again, on any lane of this worker, its row comes back from here and goes on from its step, to the
video an uninterrupted run makes. Bounded in bytes: past the bound the oldest parked rows are
dropped, and their jobs start again from their first step (counted, and logged).

No torch here: the API process imports the engine but never runs a model; a row's size is read off
its tensors.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)


class ParkedStore:
    """Parked rows by job id, oldest first, at most ``limit_bytes`` of tensors in all."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._rows: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()  # the loop puts, a lane's thread takes
        self.bytes = 0
        self.dropped = 0  # rows dropped for the bound: their jobs restart

    def put(self, job_id: str, row: Any) -> list[str]:
        """Keep ``row``; returns the job ids whose rows were dropped to stay within the bound (the
        new one too, when it alone is larger)."""
        size = row_bytes(row)
        with self._lock:
            self._rows[job_id] = (row, size)
            self.bytes += size
            dropped = []
            while self.bytes > self.limit_bytes and self._rows:
                old, (_, old_size) = self._rows.popitem(last=False)
                self.bytes -= old_size
                dropped.append(old)
            self.dropped += len(dropped)
        for old in dropped:
            log.warning("dropped the parked state of %s to stay within %d bytes; it restarts from its first step",
                        old, self.limit_bytes)
        return dropped

    def fits(self, row: Any) -> bool:
        """Whether ``row`` can be kept without dropping another."""
        with self._lock:
            return self.bytes + row_bytes(row) <= self.limit_bytes

    def take(self, job_id: str) -> Any | None:
        """The parked row of ``job_id``, no longer kept here; None when there is none."""
        with self._lock:
            kept = self._rows.pop(job_id, None)
            if kept is None:
                return None
            self.bytes -= kept[1]
            return kept[0]

    def discard(self, job_id: str) -> None:
        self.take(job_id)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._rows

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


def row_bytes(row: Any) -> int:
    """The bytes of a row's tensors: its latents and conditioning, and those its scheduler keeps."""
    tensors = [row.latents, row.prompt_embeds, row.negative_embeds, row.timesteps, getattr(row, "condition", None)]
    for value in vars(row.scheduler).values():
        tensors += value if isinstance(value, list | tuple) else [value]
    return sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "element_size") and hasattr(t, "numel"))
