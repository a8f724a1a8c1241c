"""Where finished videos live. Local disk now; S3 is a second implementation, not a second path."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    """Blob storage addressed by ``/``-separated keys such as ``videos/<job_id>/video.mp4``.

    Missing keys raise ``FileNotFoundError`` from ``get``, ``copy``, ``size`` and ``read_range``.
    """

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically: a reader sees the old blob or the whole new one."""

    def get(self, key: str) -> bytes: ...

    def copy(self, src_key: str, dst_key: str) -> None:
        """Make ``dst_key`` a blob with ``src_key``'s bytes that outlives ``src_key``'s deletion.

        Raises ``FileNotFoundError`` if ``src_key`` is missing. Atomic like ``put``."""

    def size(self, key: str) -> int: ...

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive, as in an HTTP Range header."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the backend has one (lets the API use sendfile)."""
