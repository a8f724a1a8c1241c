"""The whole of what the HTTP layer knows about the engine. Every call that reads or writes the job
store is a coroutine: the store works off the event loop (``AsyncJobStore``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from reelserve.schemas import Job, JobEvent, VideoCreateRequest
from reelserve.schemas.inputs import Uploads
from reelserve.schemas.requests import VideoRemixRequest
from reelserve.storage.base import Storage

Variant = Literal["video", "thumbnail"]


@dataclass(frozen=True)
class Content:
    storage: Storage
    key: str
    media_type: str


class VideoService(Protocol):
    @property
    def ready(self) -> bool: ...

    async def submit(self, request: VideoCreateRequest, tenant: str | None = None, awaited: bool = False,
                     uploads: Uploads | None = None) -> Job:
        """Validate, persist and enqueue; the job is durable when this returns, unless ``awaited``:
        the caller answers only after ``wait``, which makes an unfinished job durable before it
        returns it (a final one is). A cache hit comes back already completed. ``tenant`` (a hash of
        the caller's API key) keeps per-tenant caches apart. ``uploads``: a multipart body's files
        (a first frame, a clip to re-draw)."""

    async def remix(self, video_id: str, body: VideoRemixRequest, tenant: str | None = None) -> Job:
        """A new job re-drawing completed video ``video_id`` with ``body``'s prompt; the caller has been
        checked to see it. Raises ``ReelserveError(conflict)`` for a video not completed."""

    async def get(self, job_id: str) -> Job:
        """Raises ``ReelserveError(not_found)``."""

    async def list(self, limit: int, after: str | None, tenant: str | None = None) -> list[Job]:
        """Newest first; with ``tenant``, only that tenant's jobs."""

    async def cancel(self, job_id: str) -> Job: ...

    async def delete(self, job_id: str) -> None: ...

    async def wait(self, job_id: str, timeout: float, submitted: Job | None = None) -> Job:
        """The job once final, or as it stands when ``timeout`` seconds have passed, durable either
        way. ``submitted``: the job as ``submit`` just returned it, which then need not be read back."""

    def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """A snapshot event, then live events until the job is final."""

    async def content(self, job_id: str, variant: Variant) -> Content:
        """Raises not_found, or conflict while the job is unfinished."""

    async def preview(self, job_id: str) -> bytes:
        """The newest live preview (``PREVIEW_MEDIA_TYPE``); raises not_found, or conflict while there is none."""

    async def queue_depth(self) -> int: ...

    def model_info(self) -> dict[str, Any]:
        """The served model as an OpenAI ``model`` object, with each parameter's default and range."""

    def models_info(self) -> list[dict[str, Any]]:
        """Every served model's object (several behind one server: ``engine/router.py``)."""


class CacheAdmin(Protocol):
    """What the admin API may do to the result cache. Each removal returns how many entries went."""

    async def cache_stats(self) -> dict[str, object]: ...

    async def invalidate_key(self, key: str) -> int: ...

    async def invalidate_prompt(self, prompt: str) -> int:
        """Every entry of this prompt (after normalisation), whatever its other parameters."""

    async def invalidate_model(self, model: str) -> int: ...

    async def flush(self) -> int: ...


class OpsStats(Protocol):
    """The operator dashboard's numbers (``Dashboard``)."""

    async def stats(self, window_s: int, step_s: int) -> dict[str, Any]:
        """Totals and a series over the last ``window_s`` seconds in ``step_s`` points; queue, workers, model."""
