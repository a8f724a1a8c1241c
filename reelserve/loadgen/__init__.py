"""The load probe: replays a workload against a running server and reports per tier."""

from reelserve.loadgen.records import QueueSample, RequestRecord
from reelserve.loadgen.report import LoadReport, Percentiles, TierStats, percentile
from reelserve.loadgen.runner import LoadProgress, run_load
from reelserve.loadgen.workload import DEFAULT_PROMPTS, UNTIERED, LoadConfig, PlannedRequest, plan_requests

__all__ = [
    "DEFAULT_PROMPTS",
    "UNTIERED",
    "LoadConfig",
    "LoadProgress",
    "LoadReport",
    "Percentiles",
    "PlannedRequest",
    "QueueSample",
    "RequestRecord",
    "TierStats",
    "percentile",
    "plan_requests",
    "run_load",
]
