"""The job store as the event loop sees it: every call on the store's own thread, in call order, and
a job written as it was when ``save`` was called."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection
from pathlib import Path

from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.schemas import GenerationParams, Job, JobStatus


def new_job(job_id: str) -> Job:
    params = GenerationParams(model="tiny", prompt="a kite", width=32, height=32, num_frames=5, fps=8,
                              num_inference_steps=2, guidance_scale=1.0, seed=1)
    return Job(id=job_id, created_at=time.time(), params=params)


class HeldStore(SqliteJobStore):
    """A real store whose saves wait for ``release``, and which notes the thread of every call."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release, self.entered = threading.Event(), threading.Event()
        self.threads: set[str] = set()

    def get(self, job_id: str) -> Job | None:
        self.threads.add(threading.current_thread().name)
        return super().get(job_id)

    def save(self, job: Job, expect: Collection[JobStatus] | None = None) -> bool:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30)
        return super().save(job, expect)


async def test_calls_run_off_the_loop_and_the_loop_runs_meanwhile(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "jobs.sqlite3")
    jobs = AsyncJobStore(store)
    try:
        await jobs.create(new_job("j1"))
        saving = asyncio.ensure_future(jobs.save(new_job("j1")))
        # The loop is free while the store is busy: this await completes with the save still held.
        assert await asyncio.to_thread(store.entered.wait, 30)
        assert not saving.done()
        store.release.set()
        assert await saving is True
        assert await jobs.get("j1") is not None
        assert store.threads and threading.current_thread().name not in store.threads
        assert all(name.startswith("reelserve-store") for name in store.threads)
    finally:
        jobs.close()
        store.close()


async def test_calls_complete_in_the_order_they_were_made(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "jobs.sqlite3")
    store.release.set()
    jobs = AsyncJobStore(store)
    try:
        job = new_job("j1")
        await jobs.create(job)
        job.status = JobStatus.in_progress
        # Started together, never awaited in between: the read sees the write made before it.
        saved, read = await asyncio.gather(jobs.save(job, expect={JobStatus.queued}), jobs.get("j1"))
        assert saved is True and read is not None and read.status is JobStatus.in_progress
    finally:
        jobs.close()
        store.close()


async def test_a_job_is_written_as_it_was_when_save_was_called(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "jobs.sqlite3")
    jobs = AsyncJobStore(store)
    try:
        job = new_job("j1")
        await jobs.create(job)
        job.status, job.progress = JobStatus.in_progress, 40
        saving = asyncio.ensure_future(jobs.save(job))
        assert await asyncio.to_thread(store.entered.wait, 30)
        job.status, job.progress = JobStatus.completed, 100  # another coroutine moves on meanwhile
        store.release.set()
        await saving
        stored = await jobs.get("j1")
        assert stored is not None and (stored.status, stored.progress) == (JobStatus.in_progress, 40)
    finally:
        jobs.close()
        store.close()
