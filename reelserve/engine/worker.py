"""The worker side of the service: claim, batch, run, finish. It consumes the queue that a front
fills (in this process, or an API process elsewhere), runs batches on the pipeline thread through
the batch loop, keeps the shared queue's leases, and hands every outcome to the finisher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from reelserve.engine.batch_loop import BatchLoop
from reelserve.engine.events import Events
from reelserve.engine.finisher import JobFinisher, RunningJobs
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.leases import LeaseKeeper
from reelserve.engine.progress import StepProgress
from reelserve.engine.scheduler import Scheduler
from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.base import Broker
from reelserve.metrics import Metrics
from reelserve.stats import StatsRecorder, WorkerStatus

if TYPE_CHECKING:  # the runner imports torch; the API process never runs one
    from reelserve.engine.lanes import PipelineLanes
    from reelserve.engine.runner import PipelineRunner

log = logging.getLogger(__name__)
T = TypeVar("T")

# Longest a draining worker waits to hand back what it read ahead. The hand-back is a courtesy: jobs
# it could not give back are still in the queue's pending list, and live workers reclaim them.
HAND_BACK_S = 10.0


class Worker:
    """Runs one model's batches once ``start`` hands it a runner.

    :param running: the jobs it claimed and has not finished (shared with the finisher).
    :param stop_requested: ids whose rows leave their batch at the next step (cancels, lost leases).
    :param lease_interval_s: with a shared queue, seconds between heartbeats of running jobs and
        reclaims of dead workers' jobs; None for a queue no other process reads.
    :param step_policy: what may change a running batch between two steps (``join_feeder.StepPolicy``).
    """

    def __init__(
        self, *, store: AsyncJobStore, broker: Broker, scheduler: Scheduler, finisher: JobFinisher, metrics: Metrics,
        stats: StatsRecorder, bus: Events, running: RunningJobs, stop_requested: set[str], accelerations: list[str],
        model_name: str, lease_interval_s: float | None = None, step_policy: StepPolicy | None = None,
    ) -> None:
        self.broker, self.finisher, self.running, self.model_name = broker, finisher, running, model_name
        self.runner: PipelineRunner | PipelineLanes | None = None
        progress = StepProgress(store.sync, stop_requested, scheduler.shared_queue, bus.wants_progress)  # on the pipeline thread
        self.batches = BatchLoop(
            store=store, broker=broker, scheduler=scheduler, finisher=finisher, progress=progress,
            metrics=metrics, stats=stats, bus=bus, running=running, stop_requested=stop_requested,
            accelerations=accelerations, step_policy=step_policy or StepPolicy(),
        )
        self._leases = None
        if lease_interval_s is not None:
            self._leases = LeaseKeeper(
                broker, lease_interval_s, lambda: list(running.claimed), self.batches.drop_lost,
                self.batches.reclaimed.update, self.batches.give_up,
            )
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None

    async def on_model_thread(self, call: Callable[..., T], *args: object) -> T:
        """Run ``call`` (loading, warm-up, thread tuning) on the thread that will run the batches.

        Every torch call of the process on one thread: each thread that runs torch ops on CPU is an
        OpenMP master with a team of its own, and once libgomp manages more threads than there are
        cores it throttles their spinning, so every parallel region waits as if passive. Loaded and
        warmed up on a second thread, the micro model ran a batch of four in 3.2 s instead of
        1.6-1.8 s (docs/benchmarks.md, "The hot path")."""
        return await self.batches.on_pipeline_thread(call, *args)

    async def start(self, runner: PipelineRunner | PipelineLanes) -> None:
        """Start running batches with ``runner``: a loaded, warmed-up pipeline, or lanes of them."""
        from reelserve.engine.lanes import PipelineLanes  # here: the API process never runs a model

        self.runner = runner
        lanes = runner if isinstance(runner, PipelineLanes) else PipelineLanes([runner])
        self.batches.scheduler.run_lanes(lanes.lanes)
        self._loop_task = asyncio.create_task(self.batches.run(lanes), name="reelserve-engine")
        if self._leases is not None:
            self._lease_task = asyncio.create_task(self._leases.run(), name="reelserve-leases")

    async def drain(self, timeout: float) -> int:
        """Take no more batches, have the running ones park their rows to storage at their next step
        (``StepScheduling.make_way_all``; where rows cannot be parked, let them finish, up to
        ``timeout`` seconds; past that ``stop`` abandons them and other workers reclaim their jobs),
        then hand back what was read ahead. Returns how many jobs were handed back."""
        self.batches.draining = True
        if self.batches.steps.make_way_all():
            log.info("draining: the running rows park at their next step, for other workers to resume")
        if self._loop_task is not None:
            self.batches.stop_taking()  # waiting for work or gathering a batch: the batcher hands it back
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(self._loop_task, return_exceptions=True)
            except TimeoutError:
                log.warning("the running batch did not finish within %.0fs; abandoning it", timeout)
        await self.finisher.wait()
        try:
            async with asyncio.timeout(HAND_BACK_S):
                return await self.broker.release()
        except TimeoutError:
            log.warning("handing back read-ahead jobs took over %.0fs; other workers will reclaim them", HAND_BACK_S)
            return 0

    async def stop(self) -> None:
        """Stop taking batches and abandon the running one at its next step; its jobs stay in
        progress in the store, for the next start (or another worker) to run again."""
        for task in (self._loop_task, self._lease_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.finisher.wait()
        self.batches.shutdown()
        if self.runner is not None:
            self.runner.shutdown()

    def status(self, name: str) -> WorkerStatus:
        """This process as a worker on the dashboard."""
        state = "loading" if self.runner is None else "busy" if self.running.claimed else "idle"
        return WorkerStatus(name=name, model=self.model_name, state=state, running=len(self.running.claimed))
