"""The load probe: replays a workload against a running server and reports per tier.

Each name is imported when first used, so the CLI starts without httpx and numpy.
"""

from __future__ import annotations

from reelserve.lazy_names import lazy_names

_LAZY = {
    "DEFAULT_PROMPTS": "reelserve.loadgen.workload",
    "LoadConfig": "reelserve.loadgen.workload",
    "LoadProgress": "reelserve.loadgen.runner",
    "LoadReport": "reelserve.loadgen.report",
    "Percentiles": "reelserve.loadgen.report",
    "PlannedRequest": "reelserve.loadgen.workload",
    "QueueSample": "reelserve.loadgen.records",
    "RequestRecord": "reelserve.loadgen.records",
    "TierStats": "reelserve.loadgen.report",
    "UNTIERED": "reelserve.loadgen.workload",
    "percentile": "reelserve.loadgen.report",
    "plan_requests": "reelserve.loadgen.workload",
    "run_load": "reelserve.loadgen.runner",
}

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


__getattr__ = lazy_names(__name__, _LAZY)
