"""Step progress of running jobs: an event on every step someone follows, written to the store every
``PERSIST_S`` of a run; and, with a shared queue, where a cancel from another process is noticed.

Runs on the pipeline thread, between steps, so its store calls keep the event loop free and happen
in step order (the last one before the run returns, so before the final save). A run shorter than
``PERSIST_S`` writes no progress: its claim was written just before and its final save comes just
after, and a write between steps holds up the whole batch (an fsync on the thread that runs torch)."""

from __future__ import annotations

import time
from collections.abc import Callable

from reelserve.engine.finisher import RUNNING
from reelserve.jobs.base import JobStore
from reelserve.schemas import EventType, JobEvent, JobStatus

PERSIST_S = 0.5  # progress is written to the store this long into a run, and as often after


class StepProgress:
    """:param stop_requested: the ids whose rows leave their batch at the next step boundary (read by
        the pipeline thread); a job found final in the store is added to it.
    :param followed: whether anyone takes a job's step events (``Events.wants_progress``); a step
        of a job nobody follows makes no event.
    """

    def __init__(self, store: JobStore, stop_requested: set[str], shared_queue: bool,
                 followed: Callable[[str], bool] = lambda _: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.stop_requested, self._clock = store, stop_requested, clock
        self.shared_queue, self.followed = shared_queue, followed
        self._started: dict[str, float] = {}
        self._last_persist: dict[str, float] = {}

    def forget(self, job_id: str) -> None:
        self._started.pop(job_id, None)
        self._last_persist.pop(job_id, None)

    def on_step(self, job_ids: list[str], step: int, total: int) -> list[JobEvent]:
        """The progress events to publish for this step (none for rows being stopped)."""
        progress = min(99, step * 100 // total)  # 100 only once the video is stored
        now = self._clock()
        events = []
        for job_id in job_ids:
            if job_id in self.stop_requested:
                continue
            started = self._started.setdefault(job_id, now)
            due = now - self._last_persist.setdefault(job_id, now) >= PERSIST_S or (
                step == total and now - started >= PERSIST_S)  # 99 % while a long run's video is written
            if self.shared_queue or due:
                # With a shared queue a cancel comes from another process: the record says so.
                job = self.store.get(job_id)
                if job is None or job.status is not JobStatus.in_progress:
                    self.stop_requested.add(job_id)
                    continue
                if due:
                    job.progress = progress
                    self.store.save(job, expect=RUNNING)
                    self._last_persist[job_id] = now
            if self.followed(job_id):
                events.append(JobEvent(job_id=job_id, type=EventType.progress, status=JobStatus.in_progress,
                                       progress=progress, step=step, total_steps=total))
        return events
