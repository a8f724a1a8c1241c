"""A batch on a CPU lane's thread that goes straight on to write its videos on that thread.

There used to be a trip through the event loop between a run and its first write: the outcome went
to the loop, and the loop sent the write back to the lane's thread. Right after a run, libgomp's
worker threads still spin on the cores for a few milliseconds, and the loop's thread waited for one:
a lone tiny request's write began 0.8 to 5 ms after its run ended (median 1.1; with the spinning
off, 0.7 to 1.2 every time, but the run itself a third slower; docs/benchmarks.md). Here the lane's
thread hands the outcome to the loop without waiting for it, and writes at once (with the finisher's
``write_and_record``, which also saves the completed record); the loop does its bookkeeping meanwhile
and finishes each job as its own write ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from reelserve.engine.outcome import BatchOutcome
from reelserve.schemas import Job

T = TypeVar("T")


@dataclass
class HandedOutcome(Generic[T]):
    """A run's outcome, and the writes of its videos under way on the lane's thread (by job id; a row
    without frames, stopped or failed, has none)."""

    outcome: BatchOutcome
    writes: dict[str, Future[T]] = field(default_factory=dict)


def run_then_write(
    run: Callable[[], BatchOutcome],
    batch: list[Job],
    write: Callable[[Job, BatchOutcome, float], T],
    hand_over: Callable[[HandedOutcome[T]], None],
) -> BatchOutcome:
    """``run()``, then ``hand_over`` its outcome (it must not block: a ``call_soon_threadsafe``), then
    each row's ``write(job, outcome, handed_at)``, in batch order, on the calling thread (``handed_at``:
    ``perf_counter`` at the hand-over). A failed write is its future's exception, never this call's;
    a failed run raises before anything is handed over."""
    outcome = run()
    handed: HandedOutcome[T] = HandedOutcome(outcome, {job.id: Future() for job in batch if job.id in outcome.frames})
    hand_over(handed)
    handed_at = time.perf_counter()
    for job in batch:
        future = handed.writes.get(job.id)
        if future is None or not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(write(job, outcome, handed_at))
        except Exception as exc:  # noqa: BLE001 - the job fails; the other rows are still written
            future.set_exception(exc)
    return outcome
