"""What a simulation reports: latency and queue-wait percentiles, throughput, utilisation, cache hits
and deadline misses, per tier and overall."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel


@dataclass
class JobRecord:
    """One simulated request, filled in as the simulation runs. Times are simulated seconds."""

    index: int
    arrival_s: float
    tier: str
    content: int  # equal for identical requests
    batch_key: str
    deadline_s: float
    started_s: float | None = None
    finished_s: float | None = None
    cache_hit: bool = False
    rejected: bool = False


class Percentiles(BaseModel):
    """Seconds; all zero when there was nothing to measure."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        if not values:
            return cls()
        array = np.asarray(values, dtype=float)
        p50, p95, p99 = np.percentile(array, [50, 95, 99])
        return cls(
            count=len(array),
            mean=float(array.mean()),
            p50=float(p50),
            p95=float(p95),
            p99=float(p99),
            max=float(array.max()),
        )


class TierReport(BaseModel):
    """One tier's requests, or all of them (name ``"all"``). Latency is arrival to finish; cache hits
    count with zero latency. Rejected requests (tier queue full) have no latency."""

    name: str
    arrived: int
    completed: int
    rejected: int
    cache_hits: int
    deadline_misses: int
    throughput_per_s: float
    latency_s: Percentiles
    queue_wait_s: Percentiles


class PlanReport(BaseModel):
    """The outcome of one simulation."""

    workers: int
    max_batch_size: int
    simulated_s: float  # first arrival to the last finish
    batches: int
    mean_batch_size: float
    gpu_seconds: float  # pipeline time over all workers
    utilisation: float  # gpu_seconds / (workers × simulated_s)
    overall: TierReport
    tiers: list[TierReport]

    def tier(self, name: str) -> TierReport:
        for report in self.tiers:
            if report.name == name:
                return report
        raise KeyError(name)


def tier_report(name: str, jobs: Sequence[JobRecord], simulated_s: float) -> TierReport:
    done = [job for job in jobs if job.finished_s is not None]
    latencies = [job.finished_s - job.arrival_s for job in done]  # type: ignore[operator]
    waits = [job.started_s - job.arrival_s for job in done]  # type: ignore[operator]
    return TierReport(
        name=name,
        arrived=len(jobs),
        completed=len(done),
        rejected=sum(job.rejected for job in jobs),
        cache_hits=sum(job.cache_hit for job in jobs),
        deadline_misses=sum(latency > job.deadline_s for latency, job in zip(latencies, done, strict=True)),
        throughput_per_s=len(done) / simulated_s if simulated_s > 0 else 0.0,
        latency_s=Percentiles.of(latencies),
        queue_wait_s=Percentiles.of(waits),
    )
