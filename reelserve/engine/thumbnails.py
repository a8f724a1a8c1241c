"""Thumbnails made when first asked for: a completed job's JPEG is derived from its stored MP4 (the
first frame, as a player shows it) and kept beside it.

Why not with the video: writing the JPEG beside the MP4's encode cost every request about 2 ms on a
2-core machine (its encode and fsync slowed the MP4's; docs/benchmarks.md, "The hot path"), most
clients never ask for one, and a thumbnail derived from the durable MP4 cannot be lost in a crash:
the job completes once its video is on disk.
"""

from __future__ import annotations

from reelserve.storage.base import Storage
from reelserve.video import encode_thumbnail, first_frame


def ensure_thumbnail(storage: Storage, video_key: str, thumbnail_key: str) -> bool:
    """Make ``thumbnail_key`` from the MP4 at ``video_key`` unless it is stored already; True when it
    made it. Blocking. Two callers at once both make it: each ``put`` is atomic and the bytes are the
    same. Raises ``FileNotFoundError`` when the video is gone (its job was deleted meanwhile)."""
    if storage.exists(thumbnail_key):
        return False
    storage.put(thumbnail_key, encode_thumbnail(first_frame(storage.get(video_key))))
    return True
