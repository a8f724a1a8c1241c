"""Where a job's files live in ``Storage``: everything under ``videos/<job_id>/``, so deleting a job is
one ``delete_prefix``."""

from __future__ import annotations


def job_prefix(job_id: str) -> str:
    return f"videos/{job_id}/"


def _attempt(attempt: int) -> str:
    """A run after the first writes its own files: a job taken over from a stalled worker may be
    finishing there too, and the first run to complete keeps its files untouched."""
    return "" if attempt <= 1 else f".{attempt}"


def video_key(job_id: str, attempt: int = 1) -> str:
    return f"{job_prefix(job_id)}video{_attempt(attempt)}.mp4"


def parked_key(job_id: str, attempt: int = 1) -> str:
    """A row parked by a draining worker, for the worker that runs the job next (``step_scheduling``)."""
    return f"{job_prefix(job_id)}parked{_attempt(attempt)}.pt"


def thumbnail_key(job_id: str, attempt: int = 1) -> str:
    return f"{job_prefix(job_id)}thumbnail{_attempt(attempt)}.jpg"


def preview_key(job_id: str) -> str:
    """The latest live preview of a running job (``engine/previews.py``): every run writes the one
    key, the newest preview replacing the last."""
    return f"{job_prefix(job_id)}preview.webp"


def reference_key(job_id: str) -> str:
    """The first frame a job starts from (``input_reference``), fitted to its size, as PNG."""
    return f"{job_prefix(job_id)}reference.png"


def source_latents_key(job_id: str) -> str:
    """The clean latents a remix re-draws (the source video's final latents, copied at submit)."""
    return f"{job_prefix(job_id)}source.safetensors"


def source_clip_key(job_id: str) -> str:
    """The clip a job re-draws when it has no latents: an ``input_video`` upload as sent, or the MP4 of
    a remixed video whose latents had expired."""
    return f"{job_prefix(job_id)}source.mp4"


def latents_key(job_id: str) -> str:
    """A completed job's final latents, kept until its ``expires_at`` for remixes of it."""
    return f"{job_prefix(job_id)}latents.safetensors"
