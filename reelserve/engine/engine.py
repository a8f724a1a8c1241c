"""The engine: a front and a worker of one model in one process, sharing its job store, queue,
finisher and events. The embedded server and ``reelserve worker`` run one; the distributed
``reelserve api`` runs a ``VideoFront`` alone. Knows nothing of HTTP."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from reelserve.engine.front import VideoFront
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.storage_keys import thumbnail_key, video_key
from reelserve.engine.worker import Worker
from reelserve.schemas import Job
from reelserve.stats import WorkerStatus

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the runner imports torch; the API process never runs one
    from reelserve.engine.lanes import PipelineLanes
    from reelserve.engine.runner import PipelineRunner


class Engine(VideoFront):
    """Implements ``VideoService`` and runs what it accepts. Takes ``VideoFront``'s arguments, and
    ``lease_interval_s`` (``Worker``) for a queue other processes share, and ``step_policy``
    (``Worker``: continuous batching and preemption)."""

    def __init__(self, *, lease_interval_s: float | None = None, step_policy: StepPolicy | None = None,
                 **front: Any) -> None:
        super().__init__(**front)
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="reelserve-adapters")
        self.worker = Worker(
            store=self.jobs, broker=self.broker, scheduler=self.scheduler, finisher=self.finisher,
            metrics=self.metrics, stats=self.stats, bus=self.bus, running=self.running,
            stop_requested=self.stop_requested, accelerations=self.accelerations, model_name=self.model_name,
            lease_interval_s=lease_interval_s, step_policy=step_policy,
        )

    @property
    def runner(self) -> PipelineRunner | PipelineLanes | None:
        return self.worker.runner

    async def _accept(self, request: Any, params: Any, staged: Any, tenant: str | None, awaited: bool,
                      remixed_from: str | None = None) -> Job:
        """``VideoFront._accept``; the adapters a queued job names are read onto the device while it waits."""
        job = await super()._accept(request, params, staged, tenant, awaited, remixed_from)
        if params.loras and not job.cached:
            self._prefetch([ref.sha256 for ref in params.loras])
        return job

    def _prefetch(self, adapters: list[str]) -> None:
        runner = self.worker.runner
        first = getattr(runner, "runners", [runner])[0]  # the lanes share one bank
        bank = getattr(getattr(first, "family", None), "adapters", None)
        if bank is None:
            return
        future = self._prefetcher.submit(bank.prefetch, adapters)
        future.add_done_callback(_log_failed_prefetch)

    async def start(self, runner: PipelineRunner | PipelineLanes) -> None:
        """Start running batches with ``runner`` (a loaded, warmed-up pipeline, or lanes of them).

        Requests are accepted and queued before this; ready means they are also being run."""
        await self.worker.start(runner)
        self._ready = True

    async def cancel(self, job_id: str) -> Job:
        """``VideoFront.cancel``; a row it parked (preempted, waiting to resume) is dropped too."""
        job = await super().cancel(job_id)
        if job.status.final:
            self.worker.batches.steps.parked.discard(job_id)
        return job

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown of a worker (``Worker.drain``): not ready from now on."""
        self._ready = False
        return await self.worker.drain(timeout)

    async def stop(self) -> None:
        """Abandon the running batch at its next step (its jobs stay in progress in the store and are
        re-queued by the next ``recover``), then stop the front."""
        self._ready = False
        await self.worker.stop()
        self._prefetcher.shutdown(wait=True)
        await super().stop()

    def worker_status(self, name: str) -> WorkerStatus:
        return self.worker.status(name)


def _log_failed_prefetch(future: Future[None]) -> None:
    if future.exception() is not None:  # the job's run reads it again, and fails there if it must
        log.warning("prefetching adapters failed: %s", future.exception())


__all__ = ["Engine", "thumbnail_key", "video_key"]
