"""What the cache holds for one key (``CacheEntry``) and what a lookup returns (``Hit``).

An entry is metadata only: where the finished video and thumbnail live in storage, never their bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

CacheLevel = Literal["l1", "l2"]


@dataclass(frozen=True)
class CacheEntry:
    key: str
    job_id: str  # the job that produced the video; its deletion must drop the entry
    video_key: str
    thumbnail_key: str | None
    size: int  # bytes of the video file
    created: float  # unix seconds
    model: str
    prompt_hash: str
    signature: str  # signature_hash of the output signature and scope
    model_seconds: float  # inference time of the source job: what each hit saves
    prompt: str  # the normalised prompt
    # Whose job made it (a tenant id). A hit names its source job, or shows its prompt, only to this
    # tenant: under the global scope others get the video, never a way to another tenant's job.
    tenant: str = ""

    def to_redis(self) -> dict[str, str]:
        """Every field as a string, ready for HSET; a missing thumbnail is the empty string."""
        return {
            name: "" if value is None else repr(value) if isinstance(value, float) else str(value)
            for name, value in asdict(self).items()
        }

    @classmethod
    def from_redis(cls, mapping: Mapping[bytes, bytes] | Mapping[str, str]) -> CacheEntry:
        """The inverse of ``to_redis``; accepts the bytes redis-py returns. Raises ``KeyError`` or
        ``ValueError`` when a field is missing or malformed."""
        raw = {_text(name): _text(value) for name, value in mapping.items()}
        return cls(
            key=raw["key"],
            job_id=raw["job_id"],
            video_key=raw["video_key"],
            thumbnail_key=raw["thumbnail_key"] or None,
            size=int(raw["size"]),
            created=float(raw["created"]),
            model=raw["model"],
            prompt_hash=raw["prompt_hash"],
            signature=raw["signature"],
            model_seconds=float(raw["model_seconds"]),
            prompt=raw["prompt"],
            tenant=raw.get("tenant", ""),  # entries written before tenants were recorded: nobody's
        )

    def nbytes(self) -> int:
        """Approximate memory cost, for the in-process tier's byte budget: the length of its JSON."""
        return len(json.dumps(self.to_redis(), ensure_ascii=False).encode())


@dataclass(frozen=True)
class Hit:
    """A cache answer. ``similarity`` and ``matched_prompt`` are set only by a semantic match,
    where the stored prompt differs from the one asked for."""

    entry: CacheEntry
    level: CacheLevel
    similarity: float | None = None
    matched_prompt: str | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
