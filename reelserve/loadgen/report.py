"""``LoadReport``: the records of one run, and per-tier and overall statistics computed from them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reelserve.loadgen.records import QueueSample, RequestRecord
from reelserve.loadgen.step_scheduling import StepScheduling

# Rejections that promise a retry: these must carry Retry-After.
RETRYABLE_STATUSES = frozenset({429, 503})


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Percentiles(BaseModel):
    """Seconds; every field None when there were no values."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        if not values:
            return cls()
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            mean=sum(values) / len(values),
            max=max(values),
        )


class TierStats(BaseModel):
    """One tier's (or all tiers') outcome. sent = accepted + rejected + transport_errors, and
    accepted = completed + sum(failed) + cancelled + lost + unfinished."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    transport_errors: int = Field(default=0, description="POSTs that got no HTTP answer")
    rejected_by_status: dict[str, int] = Field(default_factory=dict, description="HTTP status -> count")
    rejected_by_code: dict[str, int] = Field(default_factory=dict, description="error.code -> count")
    server_errors: int = Field(default=0, description="POSTs answered 5xx (503 rejections included)")
    rejections_without_retry_after: int = Field(default=0, description="429/503 answers with no Retry-After")
    completed: int = 0
    failed: dict[str, int] = Field(default_factory=dict, description="job error.code -> count")
    cancelled: int = 0
    lost: int = Field(default=0, description="jobs that vanished (404) while being polled")
    unfinished: int = Field(default=0, description="accepted, not final when the drain timeout ended")
    e2e_s: Percentiles = Field(default_factory=Percentiles, description="client-observed, completed jobs")
    queue_wait_s: Percentiles = Field(
        default_factory=Percentiles, description="server queue_s, completed jobs"
    )
    throughput_per_s: float = Field(default=0.0, description="completed / span_s of the run")
    degraded: int = 0
    degraded_fields: dict[str, int] = Field(
        default_factory=dict, description="field -> jobs it was lowered in"
    )
    deadline_misses: int = 0
    cache_hits: int = 0
    repeats: int = Field(default=0, description="requests that resent an earlier body")

    @classmethod
    def of(cls, records: Iterable[RequestRecord], span_s: float) -> TierStats:
        records = list(records)
        rejected = [r for r in records if r.rejected]
        accepted = [r for r in records if r.accepted]
        completed = [r for r in accepted if r.final_status == "completed"]
        failed = [r for r in accepted if r.final_status == "failed"]
        degraded = [r for r in accepted if r.degraded]
        return cls(
            sent=len(records),
            accepted=len(accepted),
            rejected=len(rejected),
            transport_errors=sum(r.http_status is None for r in records),
            rejected_by_status=_counts(str(r.http_status) for r in rejected),
            rejected_by_code=_counts(r.error_code or "unknown" for r in rejected),
            server_errors=sum(r.http_status is not None and r.http_status >= 500 for r in records),
            rejections_without_retry_after=sum(
                r.http_status in RETRYABLE_STATUSES and not r.has_retry_after for r in rejected
            ),
            completed=len(completed),
            failed=_counts(r.job_error_code or "unknown" for r in failed),
            cancelled=sum(r.final_status == "cancelled" for r in accepted),
            lost=sum(r.final_status == "lost" for r in accepted),
            unfinished=sum(r.final_status is None for r in accepted),
            e2e_s=Percentiles.of([r.e2e_s for r in completed if r.e2e_s is not None]),
            queue_wait_s=Percentiles.of([r.queue_s for r in completed if r.queue_s is not None]),
            throughput_per_s=len(completed) / span_s if span_s > 0 else 0.0,
            degraded=len(degraded),
            degraded_fields=_counts(field for r in degraded for field in r.degraded or {}),
            deadline_misses=sum(r.deadline_missed for r in accepted),
            cache_hits=sum(r.cached for r in accepted),
            repeats=sum(r.repeat_of is not None for r in records),
        )


def _counts(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


class LoadReport(BaseModel):
    """One run: its config (without the API key), every request, the queue samples and the statistics."""

    config: dict[str, Any]
    started_at: float = Field(description="epoch seconds, client clock")
    planned: int = Field(description="requests in the arrival plan")
    wall_s: float = Field(description="how long the run took, drain included")
    span_s: float = Field(description="start to the last arrival or last job seen final, whichever is later")
    overall: TierStats
    tiers: dict[str, TierStats]
    records: list[RequestRecord]
    queue_samples: list[QueueSample]
    step_scheduling: StepScheduling = Field(
        default_factory=StepScheduling, description="the server's continuous batching and preemption"
    )

    @classmethod
    def build(
        cls,
        config: dict[str, Any],
        started_at: float,
        planned: int,
        wall_s: float,
        records: list[RequestRecord],
        queue_samples: list[QueueSample],
        step_scheduling: StepScheduling | None = None,
    ) -> LoadReport:
        """Compute the statistics from ``records``."""
        ends = [r.sent_s for r in records] + [r.finished_s for r in records if r.finished_s is not None]
        span_s = max(ends, default=0.0)
        by_tier: dict[str, list[RequestRecord]] = {}
        for record in records:
            by_tier.setdefault(record.tier, []).append(record)
        return cls(
            config={k: v for k, v in config.items() if k != "api_key"},
            started_at=started_at,
            planned=planned,
            wall_s=wall_s,
            span_s=span_s,
            overall=TierStats.of(records, span_s),
            tiers={tier: TierStats.of(rs, span_s) for tier, rs in sorted(by_tier.items())},
            records=records,
            queue_samples=queue_samples,
            step_scheduling=step_scheduling or StepScheduling(),
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> LoadReport:
        return cls.model_validate_json(Path(path).read_text())

    def plot(self, path: str | Path) -> Path:
        """A PNG: latency over time and queue depth over time. Needs matplotlib (``reelserve[bench]``);
        raises ``RuntimeError`` saying so when it is missing."""
        from reelserve.loadgen.plot import plot_report

        return plot_report(self, Path(path))
