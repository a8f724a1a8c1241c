"""A batch on a CPU lane's thread that goes straight on to write its videos on that thread.

There used to be a trip through the event loop between a run and its first write: the outcome went
to the loop, and the loop sent the write back to the lane's thread. Right after a run, libgomp's
worker threads still spin on the cores for a few milliseconds, and the loop's thread waited for one:
a lone tiny request's write began 0.8 to 5 ms after its run ended (median 1.1; with the spinning
off, 0.7 to 1.2 every time, but the run itself a third slower; docs/benchmarks.md). Here the lane's
thread hands the outcome to the loop without waiting for it, and writes at once; the loop does its
bookkeeping meanwhile and finishes each job as its own write ends.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from reelserve.engine.outcome import BatchOutcome
from reelserve.schemas import Job


@dataclass
class HandedOutcome:
    """A run's outcome, and the writes of its videos under way on the lane's thread (by job id; a row
    without frames, stopped or failed, has none). A write's result is its own seconds."""

    outcome: BatchOutcome
    writes: dict[str, Future[float]] = field(default_factory=dict)


def run_then_write(
    run: Callable[[], BatchOutcome],
    batch: list[Job],
    write: Callable[[Job, object], float],
    hand_over: Callable[[HandedOutcome], None],
) -> BatchOutcome:
    """``run()``, then ``hand_over`` its outcome (it must not block: a ``call_soon_threadsafe``), then
    each row's ``write``, in batch order, on the calling thread. A failed write is its future's
    exception, never this call's; a failed run raises before anything is handed over."""
    outcome = run()
    handed = HandedOutcome(outcome, {job.id: Future() for job in batch if job.id in outcome.frames})
    hand_over(handed)
    for job in batch:
        future = handed.writes.get(job.id)
        if future is None or not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(write(job, outcome.frames[job.id]))
        except Exception as exc:  # noqa: BLE001 - the job fails; the other rows are still written
            future.set_exception(exc)
    return outcome
