"""Where a job's files live in ``Storage``: everything under ``videos/<job_id>/``, so deleting a job is
one ``delete_prefix``."""

from __future__ import annotations


def job_prefix(job_id: str) -> str:
    return f"videos/{job_id}/"


def video_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}video.mp4"


def thumbnail_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}thumbnail.jpg"
