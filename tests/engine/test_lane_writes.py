"""write_here: the write's future handed to the loop first, then the write on the same thread."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from reelserve.engine.lane_writes import write_here


def test_the_future_is_handed_over_before_the_write_which_runs_on_this_thread() -> None:
    seen: list[tuple[bool, list[str]]] = []
    handed: list[Future[str]] = []
    written: list[str] = []

    def hand_over(future: Future[str]) -> None:
        seen.append((future.done(), list(written)))
        handed.append(future)

    def write() -> str:
        written.append(threading.current_thread().name)
        return "saved"

    write_here(write, hand_over)
    assert seen == [(False, [])]  # handed over before anything was written
    assert written == [threading.current_thread().name]
    assert handed[0].result() == "saved"


def test_a_failed_write_is_its_futures_exception_not_the_callers() -> None:
    handed: list[Future[str]] = []

    def write() -> str:
        raise OSError("disk full")

    write_here(write, handed.append)  # does not raise: the batch goes on
    with pytest.raises(OSError, match="disk full"):
        handed[0].result()


def test_a_future_cancelled_on_hand_over_is_not_written() -> None:
    written: list[int] = []
    write_here(lambda: written.append(1), lambda future: future.cancel())
    assert written == []
