"""A finished row's video written on the CPU lane's thread that ran it, the moment the row is decoded.

There used to be a trip through the event loop between a run and its first write: the outcome went
to the loop, and the loop sent the write back to the lane's thread. Right after a run, libgomp's
worker threads still spin on the cores for a few milliseconds, and the loop's thread waited for one:
a lone tiny request's write began 0.8 to 5 ms after its run ended (median 1.1; with the spinning
off, 0.7 to 1.2 every time, but the run itself a third slower; docs/benchmarks.md). Here the lane's
thread hands the write's future to the loop without waiting for it, and writes at once (with the
finisher's ``write_and_record``, which also saves the completed record); the loop does its
bookkeeping meanwhile and finishes the job as the write ends. The batch's other rows wait for the
write: on the CPU there is no other core to run them on.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def write_here(write: Callable[[], T], hand_over: Callable[[Future[T]], None]) -> None:
    """``hand_over`` the future of ``write()`` (it must not block: a ``call_soon_threadsafe``), then
    run ``write`` on the calling thread. A failed write is the future's exception, never this call's."""
    future: Future[T] = Future()
    hand_over(future)
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(write())
    except Exception as exc:  # noqa: BLE001 - the job fails; the batch goes on
        future.set_exception(exc)
