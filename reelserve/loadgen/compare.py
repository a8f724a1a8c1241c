"""Two load runs side by side (``reelserve bench compare A.json B.json``), per tier and overall: end-to-end
p50/p95/p99, completed and completed per second, each with the ratio B/A. Made for a run with step
scheduling on against one with it off (each report says which, ``LoadReport.step_scheduling``), but
any two reports compare."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from reelserve.loadgen.report import LoadReport, TierStats

OVERALL = "all"
METRICS: list[tuple[str, Callable[[TierStats], float | None]]] = [
    ("e2e p50 (s)", lambda stats: stats.e2e_s.p50),
    ("e2e p95 (s)", lambda stats: stats.e2e_s.p95),
    ("e2e p99 (s)", lambda stats: stats.e2e_s.p99),
    ("completed", lambda stats: float(stats.completed)),
    ("completed/s", lambda stats: stats.throughput_per_s),
]


class MetricComparison(BaseModel):
    """One metric of one tier in both runs; None where a run has no value (no such tier, nothing completed)."""

    tier: str
    metric: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a; None when either is missing or a is 0


def compare_reports(a: LoadReport, b: LoadReport) -> list[MetricComparison]:
    """Every metric of ``METRICS`` for each tier either run has (by name), then for all requests."""
    tiers = [*sorted(set(a.tiers) | set(b.tiers)), OVERALL]
    rows = []
    for tier in tiers:
        stats_a, stats_b = _tier(a, tier), _tier(b, tier)
        for metric, value_of in METRICS:
            value_a = None if stats_a is None else value_of(stats_a)
            value_b = None if stats_b is None else value_of(stats_b)
            rows.append(
                MetricComparison(tier=tier, metric=metric, a=value_a, b=value_b, ratio=ratio(value_a, value_b))
            )
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


def _tier(report: LoadReport, tier: str) -> TierStats | None:
    return report.overall if tier == OVERALL else report.tiers.get(tier)
