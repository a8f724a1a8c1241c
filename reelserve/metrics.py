"""Prometheus metrics, all prefixed ``reelserve_``. Each server owns its own registry so several
can live in one process (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_CACHE_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


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
        self.preempted_rows = Counter(
            "reelserve_preempted_rows", "Running rows parked to make way for more urgent work (preemption)", registry=r
        )
        self.resumed_steps = Counter(
            "reelserve_resumed_steps", "Denoising steps not run again: parked rows that went on from their step",
            registry=r,
        )
        self.joined_rows = Counter(
            "reelserve_joined_rows", "Jobs that joined a batch already running (continuous batching)", registry=r
        )
        self.queue_depth = Gauge("reelserve_queue_depth", "Jobs waiting to run", registry=r)
        self.finished = Counter(
            "reelserve_jobs_finished", "Jobs reaching a final status", ["status"], registry=r
        )
        self._add_cache_metrics(r)
        self._add_scheduling_metrics(r)
        self._device_metrics(r)
        self.lora_adapter_events = Counter(
            "reelserve_lora_adapter_events",
            "LoRA adapters a call needed, by event: hit (on the device), load (read onto it), evict (dropped "
            "for room)",
            ["event"],
            registry=r,
        )
        self.input_latents_requests = Counter(
            "reelserve_input_latents_requests",
            "First frames and clips to re-draw a row needed, by outcome: hit (already encoded) or miss (read and "
            "encoded)",
            ["result"],
            registry=r,
        )
        self.text_embedding_cache_requests = Counter(
            "reelserve_text_embedding_cache_requests",
            "Text-embedding cache lookups (one per distinct prompt per batch) by outcome",
            ["result"],
            registry=r,
        )


    def _device_metrics(self, r: CollectorRegistry) -> None:
        """What moves models and their work between devices: parallel groups, swaps of several models."""
        self.parallel_rank_failures = Counter(
            "reelserve_parallel_rank_failures",
            "Batches a parallel worker lost a rank in (its jobs were run again)", registry=r,
        )
        self.parallel_restart_seconds = Histogram(
            "reelserve_parallel_restart_seconds", "Time to build a parallel worker's process group again",
            buckets=_SECONDS, registry=r,
        )
        self.model_swaps = Counter(
            "reelserve_model_swaps", "Models' weights moved onto the device (in) or off it for room (out)",
            ["model", "direction"], registry=r,
        )
        self.model_swap_seconds = Histogram(
            "reelserve_model_swap_seconds", "Time to move a model's weights onto or off the device",
            ["model", "direction"], buckets=_SECONDS, registry=r,
        )

    def _add_cache_metrics(self, r: CollectorRegistry) -> None:
        # A lookup counts at l1, and at l2 when it passes L1 and the bloom filter (an unreachable
        # Redis counts as an l2 miss); so l1 misses = bloom negatives + l2 requests.
        self.cache_requests = Counter(
            "reelserve_cache_requests", "Result-cache lookups by tier and outcome", ["level", "result"], registry=r
        )
        self.cache_semantic_requests = Counter(
            "reelserve_cache_semantic_requests",
            "Semantic lookups (after an exact miss, for requests that ask) by outcome",
            ["result"],
            registry=r,
        )
        self.cache_bloom_negatives = Counter(
            "reelserve_cache_bloom_negatives", "Lookups the bloom filter answered without Redis", registry=r
        )
        self.cache_evictions = Counter(
            "reelserve_cache_evictions", "Entries evicted for capacity", ["level"], registry=r
        )
        self.cache_entries = Gauge("reelserve_cache_entries", "Entries held", ["level"], registry=r)
        self.cache_bytes = Gauge("reelserve_cache_bytes", "Approximate bytes held", ["level"], registry=r)
        self.cache_hit_seconds = Histogram(
            "reelserve_cache_hit_seconds", "Lookup time of cache hits", buckets=_CACHE_SECONDS, registry=r
        )
        self.cache_model_seconds_saved = Counter(
            "reelserve_cache_model_seconds_saved", "Inference seconds the cache hits did not spend", registry=r
        )
        self.cache_errors = Counter(
            "reelserve_cache_errors", "Failed Redis calls of the result cache", ["op"], registry=r
        )

    def _add_scheduling_metrics(self, r: CollectorRegistry) -> None:
        self.tier_queue_depth = Gauge("reelserve_tier_queue_depth", "Jobs not yet started, by tier (a batch still gathering joiners included)", ["tier"], registry=r)
        self.tier_queue_wait = Histogram(
            "reelserve_tier_queue_wait_seconds", "Time from acceptance to start, by tier", ["tier"],
            buckets=_SECONDS, registry=r,
        )
        self.admissions = Counter("reelserve_admissions", "Jobs admitted to the queue, by tier", ["tier"], registry=r)
        self.rejections = Counter(
            "reelserve_rejections", "Requests refused at admission, by reason (the error code)", ["reason"], registry=r
        )
        self.degradations = Counter(
            "reelserve_degradations", "Parameters lowered to admit a job, by tier and parameter", ["tier", "param"],
            registry=r,
        )
        self.deadline_misses = Counter(
            "reelserve_deadline_misses",
            "Jobs that missed their deadline: expired_in_queue (failed, never ran) or completed_late",
            ["tier", "kind"],
            registry=r,
        )
        self.estimate_error = Histogram(
            "reelserve_completion_estimate_error_seconds",
            "|actual - estimated| completion time of completed jobs, the estimate made at admission",
            buckets=_SECONDS, registry=r,
        )
        self.circuit_state = Gauge(
            "reelserve_circuit_state", "Pipeline circuit breaker, by model: 0 closed, 1 half-open, 2 open",
            ["model"], registry=r,
        )

    def watch_jobs(self, count: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobsByStatus(count))

    def render(self) -> bytes:
        """The exposition text. Call it off the event loop: it reads the job store (``watch_jobs``);
        every collector here may be read from another thread."""
        return generate_latest(self.registry)
