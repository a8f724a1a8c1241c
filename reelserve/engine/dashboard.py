"""What the operator dashboard shows (``GET /v1/admin/stats``): the stats recorder's buckets over a
window, and the queue, workers and model as they are now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reelserve.stats import BUCKET_S, summarize

if TYPE_CHECKING:
    from reelserve.engine.front import VideoFront


class Dashboard:
    def __init__(self, engine: VideoFront, clock: Callable[[], float] = time.time) -> None:
        self._engine, self._clock = engine, clock

    async def stats(self, window_s: int, step_s: int) -> dict[str, Any]:
        """``window_s`` a multiple of ``step_s``, itself a multiple of ``BUCKET_S`` (the API checks both)."""
        engine, now = self._engine, self._clock()
        buckets = await engine.stats.buckets(now - window_s - BUCKET_S)
        by_tier = await engine.scheduler.depth_by_tier()
        return {
            "object": "stats",
            "generated_at": now,
            "window_s": window_s,
            "step_s": step_s,
            "model": {"id": engine.model_name, "ready": engine.ready, "accelerations": list(engine.accelerations)},
            "workers": await engine.stats.workers(),
            "queue": {"depth": sum(by_tier.values()), "by_tier": by_tier},
            **summarize(buckets, now, window_s, step_s),
        }
