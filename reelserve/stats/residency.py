"""Which workers hold which models' weights on their devices, as the API role knows it: from the statuses
the workers write with their heartbeats (``WorkerStatus.loaded``, ``swap_in_s``), read back every second.
The API runs no model, so this is what its admission counts a swap by, and what ``/v1/models`` says."""

from __future__ import annotations

from typing import Any


class FleetResidency:
    """The last statuses read. A model no live worker serves has no swap to count: its jobs wait for a
    worker, which the queue's own estimate covers."""

    def __init__(self) -> None:
        self._workers: list[dict[str, Any]] = []

    def update(self, workers: list[dict[str, Any]]) -> None:
        """``workers``: as ``StatsRecorder.workers()`` returns them; stale and loading ones take no jobs."""
        self._workers = [w for w in workers if w.get("state") in ("idle", "busy")]

    def loaded(self, model: str) -> bool:
        """Whether some live worker has ``model``'s weights on its device now."""
        return any(w.get("loaded", True) for w in self._serving(model))

    def swap_cost(self, model: str) -> float:
        """Seconds before ``model`` could run for its weights alone: 0 if a worker has it loaded (or none
        serves it), else the quickest bring-in among the workers that serve it."""
        serving = self._serving(model)
        if not serving or self.loaded(model):
            return 0.0
        return min(float(w.get("swap_in_s") or 0.0) for w in serving)

    def _serving(self, model: str) -> list[dict[str, Any]]:
        return [w for w in self._workers if w.get("model") == model]
