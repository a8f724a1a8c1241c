"""Which step scheduling (continuous batching, preemption) the server ran a load with, read defensively:
a probe that cannot learn it still runs, and says so.

Two sources:

- The settings: ``GET /v1/models``, the served model's ``step_scheduling`` object,
  ``{"continuous_batching": bool, "preemption": bool}``. A server that does not report it (an older
  one) leaves them unknown (None).
- What the server did: the counters ``reelserve_joined_rows``, ``reelserve_preempted_rows`` and
  ``reelserve_resumed_steps`` in ``/metrics``, before and after the run. A row that joined shows
  continuous batching was on; one preempted, that preemption was; none shows nothing (the lanes may
  never all have been busy). They count where the model runs: an API server of the distributed mode
  may not have them (None).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

MODELS_PATH = "/v1/models"
SETTINGS_FIELD = "step_scheduling"  # on each model object of GET /v1/models
SETTINGS = ("continuous_batching", "preemption")
COUNTERS = {  # report field -> counter family in /metrics
    "joined_rows": "reelserve_joined_rows",
    "preempted_rows": "reelserve_preempted_rows",
    "resumed_steps": "reelserve_resumed_steps",
}
READ_TIMEOUT_S = 2.0  # per read: a server that does not answer must not hold up the run or its report


class StepScheduling(BaseModel):
    """The server's step scheduling during a run, as far as it could be learnt."""

    continuous_batching: bool | None = Field(default=None, description="the server's setting; None: not reported")
    preemption: bool | None = Field(default=None, description="the server's setting; None: not reported")
    source: str = Field(default="not read", description="where the settings came from, or why they are unknown")
    joined_rows: float | None = Field(default=None, description="rows that joined running batches during the run")
    preempted_rows: float | None = Field(default=None, description="running rows parked for more urgent work")
    resumed_steps: float | None = Field(default=None, description="steps parked rows did not run again")

    def label(self) -> str:
        """E.g. ``continuous batching on, preemption unknown (seen: 3 rows joined, 0 preempted)``."""
        states = [
            f"continuous batching {_state(self.continuous_batching, self.joined_rows)}",
            f"preemption {_state(self.preemption, self.preempted_rows)}",
        ]
        seen = []
        if self.joined_rows is not None:
            seen.append(f"{self.joined_rows:g} rows joined")
        if self.preempted_rows is not None:
            seen.append(f"{self.preempted_rows:g} preempted")
        return ", ".join(states) + (f" (seen: {', '.join(seen)})" if seen else "")

    def with_counters(self, before: dict[str, float], after: dict[str, float]) -> StepScheduling:
        """With what the counters moved by between two reads (a counter missing from either: None)."""
        moved = {name: after[name] - before[name] for name in COUNTERS if name in before and name in after}
        return self.model_copy(update=moved)


def _state(setting: bool | None, seen: float | None) -> str:
    if setting is not None:
        return "on" if setting else "off"
    return "on (seen in /metrics)" if seen else "unknown"


def settings_of(models: Any) -> StepScheduling:
    """The settings in a ``GET /v1/models`` answer (a list of model objects under ``data``); unknown,
    saying why, when it does not carry them as booleans."""
    where = f"GET {MODELS_PATH}: data[0].{SETTINGS_FIELD}"
    data = models.get("data") if isinstance(models, dict) else None
    model = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    settings = model.get(SETTINGS_FIELD) if model is not None else None
    if not isinstance(settings, dict):
        return StepScheduling(source=f"unknown: the server does not report it (no {where})")
    known = {name: settings[name] for name in SETTINGS if isinstance(settings.get(name), bool)}
    return StepScheduling(**known, source=where)


def counters_of(metrics_text: str) -> dict[str, float]:
    """The step counters' values in a /metrics text (summed over labels); those absent are left out."""
    # prometheus_client writes "# TYPE x_total counter"; the parser names that family x or x_total.
    samples = {f"{family}_total": name for name, family in COUNTERS.items()}
    values: dict[str, float] = {}
    with contextlib.suppress(ValueError):  # not Prometheus text: no counters
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                if sample.name in samples:
                    name = samples[sample.name]
                    values[name] = values.get(name, 0.0) + sample.value
    return values


async def read_settings(client: httpx.AsyncClient) -> StepScheduling:
    """``settings_of`` the server's ``GET /v1/models``; never raises (its failure is the ``source``)."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):  # the transport's own timeouts may not apply
            response = await client.get(MODELS_PATH)
        if response.status_code != 200:
            return StepScheduling(source=f"unknown: GET {MODELS_PATH} answered {response.status_code}")
        return settings_of(response.json())
    except Exception as exc:  # noqa: BLE001 - any failure (transport, JSON, a test's fake) leaves it unknown
        return StepScheduling(source=f"unknown: GET {MODELS_PATH} failed ({type(exc).__name__})")


async def read_counters(client: httpx.AsyncClient) -> dict[str, float]:
    """``counters_of`` the server's /metrics now; empty when it cannot be read."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            response = await client.get("/metrics")
        return counters_of(response.text) if response.status_code == 200 else {}
    except Exception:  # noqa: BLE001 - unreadable: no counters, the report says so
        return {}
