"""run_then_write: the run, the hand-over to the loop, then each row's write on the same thread."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from reelserve.engine.lane_writes import HandedOutcome, run_then_write
from reelserve.engine.outcome import BatchOutcome
from reelserve.schemas import GenerationParams, Job

PARAMS = GenerationParams(model="tiny", prompt="a fox", width=32, height=32, num_frames=5, fps=8,
                          num_inference_steps=2, guidance_scale=5.0, seed=1)


def jobs(*names: str) -> list[Job]:
    return [Job(id=f"video_{name}", params=PARAMS, created_at=1.0) for name in names]


def outcome_for(*names: str) -> BatchOutcome:
    return BatchOutcome(frames={f"video_{name}": np.full((5, 32, 32, 3), 0.5) for name in names})


def test_the_outcome_is_handed_over_before_any_write_and_rows_are_written_in_order() -> None:
    batch, seen, written = jobs("a", "b", "c"), [], []
    writes: dict[str, Future[float]] = {}
    outcome = outcome_for("a", "c")  # b was stopped: no frames, no write

    def hand_over(handed: HandedOutcome[float]) -> None:
        seen.append((handed.outcome, sorted(handed.writes), [f.done() for f in handed.writes.values()]))
        writes.update(handed.writes)

    def write(job: Job, ran: BatchOutcome, handed_at: float) -> float:
        assert ran is outcome and job.id in ran.frames
        written.append((job.id, threading.current_thread().name))
        return 0.25

    result = run_then_write(lambda: outcome, batch, write, hand_over)
    assert result is outcome
    assert seen == [(outcome, ["video_a", "video_c"], [False, False])]  # handed over before writing
    here = threading.current_thread().name
    assert written == [("video_a", here), ("video_c", here)]
    assert [future.result() for future in writes.values()] == [0.25, 0.25]


def test_a_failed_write_fails_its_own_row_only() -> None:
    handed: list[HandedOutcome[float]] = []

    def write(job: Job, ran: BatchOutcome, handed_at: float) -> float:
        if job.id == "video_a":
            raise OSError("disk full")
        return 0.5

    run_then_write(lambda: outcome_for("a", "b"), jobs("a", "b"), write, handed.append)
    writes = handed[0].writes
    with pytest.raises(OSError, match="disk full"):
        writes["video_a"].result()
    assert writes["video_b"].result() == 0.5


def test_a_failed_run_raises_and_hands_nothing_over() -> None:
    handed: list[HandedOutcome[float]] = []

    def run() -> BatchOutcome:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_then_write(run, jobs("a"), lambda job, ran, handed_at: 0.0, handed.append)
    assert handed == []
