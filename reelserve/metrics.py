"""Prometheus metrics, all prefixed ``reelserve_``. Each server owns its own registry so several
can live in one process (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class _JobsByStatus(Collector):
    """Read at scrape time from the job store, so the number is the store's, not a drifting copy."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("reelserve_jobs", "Jobs in the store by status", labels=["status"])
        for status, n in self._count().items():
            family.add_metric([str(status)], n)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "reelserve_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.queue_wait = Histogram(
            "reelserve_queue_wait_seconds", "Time from acceptance to start", buckets=_SECONDS, registry=r
        )
        self.inference = Histogram(
            "reelserve_inference_seconds", "Pipeline time per batch", buckets=_SECONDS, registry=r
        )
        self.end_to_end = Histogram(
            "reelserve_end_to_end_seconds", "Time from acceptance to completion", buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram("reelserve_batch_size", "Jobs per pipeline call", buckets=_BATCH, registry=r)
        self.queue_depth = Gauge("reelserve_queue_depth", "Jobs waiting to run", registry=r)
        self.finished = Counter(
            "reelserve_jobs_finished", "Jobs reaching a final status", ["status"], registry=r
        )

    def watch_jobs(self, count: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobsByStatus(count))

    def render(self) -> bytes:
        return generate_latest(self.registry)
