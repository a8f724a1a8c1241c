"""Live previews, the loop's side. A row asks for one every ``preview_every`` steps (its request, or
the server's default); after such a step the lane's thread makes it (``live_previews``) and hands it
here, to go out as an SSE ``preview`` event and be kept, the newest only, in storage for
``GET /v1/videos/{id}/preview``. No torch here: the API role serves the stored previews.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time

from reelserve.engine.events import Events
from reelserve.engine.storage_keys import preview_key
from reelserve.schemas import EventType, Job, JobEvent, JobStatus
from reelserve.storage.base import Storage

log = logging.getLogger(__name__)

PREVIEW_MEDIA_TYPE = "image/webp"  # models/previews.py makes (animated) WebP


class PreviewOut:
    """The loop's side: each preview out as an event, timed on its job, and the newest kept in storage.
    At most one storage write per job is under way; a preview that comes meanwhile replaces the one
    waiting, so a slow store never queues previews up."""

    def __init__(self, storage: Storage, bus: Events, stopped: set[str]) -> None:
        self.storage, self.bus, self.stopped = storage, bus, stopped
        self._waiting: dict[str, bytes] = {}  # job id -> the newest preview not written yet
        self._writers: dict[str, asyncio.Task[None]] = {}

    def show(self, job: Job, step: int, total: int, image: bytes) -> None:
        """On the loop. ``job``: the running row's job (its record is saved with its timings later)."""
        if job.id in self.stopped:
            return
        if job.timings.first_preview_s is None:
            job.timings.first_preview_s = time.time() - job.created_at
        if self.bus.wants_progress(job.id):
            url = f"data:{PREVIEW_MEDIA_TYPE};base64,{base64.b64encode(image).decode()}"
            self.bus.publish(JobEvent(job_id=job.id, type=EventType.preview, status=JobStatus.in_progress,
                                      progress=min(99, step * 100 // total), step=step, total_steps=total,
                                      preview=url))
        self._waiting[job.id] = image
        if job.id not in self._writers:
            self._writers[job.id] = asyncio.get_running_loop().create_task(self._write(job.id))

    async def _write(self, job_id: str) -> None:
        try:
            while (image := self._waiting.pop(job_id, None)) is not None:
                if job_id in self.stopped:  # cancelled or deleted: leave nothing behind
                    return
                await asyncio.to_thread(self.storage.put, preview_key(job_id), image)
        except Exception as exc:  # noqa: BLE001 - the event went out; the stored copy is best-effort
            log.warning("storing the preview of %s failed (%s: %s)", job_id, type(exc).__name__, exc)
        finally:
            self._writers.pop(job_id, None)
            self._waiting.pop(job_id, None)
