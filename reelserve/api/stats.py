"""``GET /v1/admin/stats``: the operator dashboard's JSON (admin key), so the page never parses ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from reelserve.engine.service import OpsStats
from reelserve.schemas import invalid
from reelserve.stats import BUCKET_S


def stats_router(dashboard: OpsStats) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"])

    @router.get("/stats")
    async def stats(
        window: Annotated[int, Query(ge=60, le=3600, description="seconds of history")] = 900,
        step: Annotated[int, Query(ge=BUCKET_S, le=600, description="seconds per point")] = 30,
    ) -> dict[str, Any]:
        """Totals over the window; a series of completed/failed/cancelled/cached counts, throughput and
        p50/p95 end-to-end latency per point; batch sizes; queue depth per tier; workers; the model."""
        if step % BUCKET_S:
            raise invalid("step", f"step must be a multiple of {BUCKET_S} seconds; got {step}")
        if window % step:
            raise invalid("step", f"step must divide window ({window} s); got {step}")
        return await dashboard.stats(window, step)

    return router
