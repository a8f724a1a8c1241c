"""One log line per job, when it reaches its final state; nothing per step. No prompt is ever logged
(a prompt may hold what the sensitive-data rules keep out of the cache)."""

from __future__ import annotations

import logging

from reelserve.schemas import Job

log = logging.getLogger("reelserve.jobs")


def final_line(job: Job) -> str:
    """e.g. ``video_ab12… completed: 64x64, 17 frames, 20 steps, batch 2, 3.41 s (queue 0.10 s)``."""
    p, t = job.params, job.timings
    what = f"{job.id} {job.status.value}"
    if job.cached:
        return f"{what} from the cache: {p.size}, {p.num_frames} frames, {p.num_inference_steps} steps"
    if job.error is not None:
        what += f" ({job.error.code})"
    line = f"{what}: {p.size}, {p.num_frames} frames, {p.num_inference_steps} steps"
    if job.batch_size:
        line += f", batch {job.batch_size}"
    total = t.total_s if t.total_s is not None else (
        job.completed_at - job.created_at if job.completed_at is not None else None
    )
    if total is not None:
        line += f", {total:.2f} s" + (f" (queue {t.queue_s:.2f} s)" if t.queue_s is not None else "")
    return line


def log_final(job: Job) -> None:
    log.info("%s", final_line(job))
