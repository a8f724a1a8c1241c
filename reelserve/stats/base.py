"""What the stats recorders keep, and the one summary both are read through.

Jobs and batches are counted in ten-second buckets by the time they finished; each bucket keeps
(a bounded sample of) its jobs' end-to-end latencies, so percentiles over any window are exact up to
that sample, not read off histogram buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from reelserve.schemas import Job, JobStatus

BUCKET_S = 10
RETENTION_S = 3600 + 2 * BUCKET_S
MAX_LATENCY_SAMPLES = 500  # per bucket: 50 jobs/s finishing for ten seconds
STALE_AFTER_S = 15.0  # a worker not heard from for this long is shown as stale


@dataclass
class Bucket:
    start: int
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cached: int = 0
    latencies: list[float] = field(default_factory=list)  # end-to-end seconds of completed, uncached jobs
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def add(self, other: Bucket) -> None:
        self.completed += other.completed
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.cached += other.cached
        self.latencies.extend(other.latencies)
        self.batch_sizes.update(other.batch_sizes)


@dataclass(frozen=True)
class WorkerStatus:
    """One process that runs the model. ``state``: loading, idle, busy (or stale, as read back).
    ``loaded``: whether the model's weights are on the device now (a worker serving several models swaps
    them); ``swap_in_s``: the seconds bringing them in would take (0 when loaded)."""

    name: str
    model: str
    state: str
    running: int
    loaded: bool = True
    swap_in_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "state": self.state, "running": self.running,
                "loaded": self.loaded, "swap_in_s": self.swap_in_s}


def bucket_of(at: float) -> int:
    return int(at // BUCKET_S) * BUCKET_S


def job_fields(job: Job) -> tuple[str, float | None]:
    """The counter a final job adds to, and its latency sample (completed jobs that ran only: a cache
    hit's near-zero time would hide how long generation takes)."""
    if job.status is JobStatus.completed and job.cached:
        return "cached", None
    if job.status is JobStatus.completed:
        total = job.timings.total_s
        return "completed", total if total is not None and math.isfinite(total) else None
    return job.status.value, None


class StatsRecorder(Protocol):
    def job_finished(self, job: Job) -> None:
        """Count a job that reached a final status (once per job: the engine calls it from one place)."""

    def batch_ran(self, size: int) -> None: ...

    def register_worker(self, status: Callable[[], WorkerStatus]) -> None:
        """This process runs the model: report ``status()`` to whoever reads the stats."""

    async def buckets(self, since: float) -> list[Bucket]:
        """The buckets starting at or after ``since``, oldest first (empty ones may be left out)."""

    async def workers(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(buckets: Iterable[Bucket], now: float, window_s: int, step_s: int) -> dict[str, Any]:
    """The window's totals, a series of ``window_s / step_s`` points (oldest first, every point present),
    and the batch-size distribution. ``step_s`` is a multiple of ``BUCKET_S``."""
    end = bucket_of(now) + BUCKET_S
    first = end - window_s
    points = {first + i * step_s: Bucket(first + i * step_s) for i in range(window_s // step_s)}
    total = Bucket(first)
    for bucket in buckets:
        if not first <= bucket.start < end:
            continue
        points[first + (bucket.start - first) // step_s * step_s].add(bucket)
        total.add(bucket)
    done = total.completed + total.cached
    return {
        "totals": {
            "completed": done,
            "failed": total.failed,
            "cancelled": total.cancelled,
            "cached": total.cached,
            "cache_hit_rate": total.cached / done if done else None,
            "throughput_per_min": done * 60 / window_s,
            "p50_s": percentile(total.latencies, 50),
            "p95_s": percentile(total.latencies, 95),
        },
        "batch_sizes": [{"size": size, "count": n} for size, n in sorted(total.batch_sizes.items())],
        "series": [
            {
                "t": point.start,
                "completed": point.completed + point.cached,
                "failed": point.failed,
                "cancelled": point.cancelled,
                "cached": point.cached,
                "throughput_per_min": (point.completed + point.cached) * 60 / step_s,
                "p50_s": percentile(point.latencies, 50),
                "p95_s": percentile(point.latencies, 95),
            }
            for point in points.values()
        ],
    }
