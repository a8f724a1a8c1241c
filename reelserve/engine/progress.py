"""Step progress of running jobs: an event on every step, written to the store at most every
``PERSIST_S`` per job; and, with a shared queue, where a cancel from another process is noticed.

Runs on the pipeline thread, between steps, so its store calls keep the event loop free and happen
in step order (the last one before the run returns, so before the final save)."""

from __future__ import annotations

import time

from reelserve.engine.finisher import RUNNING
from reelserve.jobs.base import JobStore
from reelserve.schemas import EventType, JobEvent, JobStatus

PERSIST_S = 0.5  # progress is written to the store at most this often per job


class StepProgress:
    """:param stop_requested: the ids whose rows leave their batch at the next step boundary (read by
        the pipeline thread); a job found final in the store is added to it."""

    def __init__(self, store: JobStore, stop_requested: set[str], shared_queue: bool) -> None:
        self.store, self.stop_requested = store, stop_requested
        self.shared_queue = shared_queue
        self._last_persist: dict[str, float] = {}

    def forget(self, job_id: str) -> None:
        self._last_persist.pop(job_id, None)

    def on_step(self, job_ids: list[str], step: int, total: int) -> list[JobEvent]:
        """The progress events to publish for this step (none for rows being stopped)."""
        progress = min(99, step * 100 // total)  # 100 only once the video is stored
        now = time.monotonic()
        events = []
        for job_id in job_ids:
            if job_id in self.stop_requested:
                continue
            due = now - self._last_persist.get(job_id, 0.0) >= PERSIST_S or step == total
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
            events.append(
                JobEvent(job_id=job_id, type=EventType.progress, status=JobStatus.in_progress,
                         progress=progress, step=step, total_steps=total)
            )
        return events
