"""Continuous batching in the runner: rows offered through a JoinQueue join the running batch at the
next step boundary, each ends as if it ran alone, and every row is handed out as it finishes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import StepRecorder

from reelserve.engine.joining import JoinQueue
from reelserve.engine.runner import PipelineRunner
from reelserve.schemas import GenerationParams


def params(prompt: str, seed: int, steps: int, guidance: float = 5.0) -> GenerationParams:
    return GenerationParams(model="tiny", prompt=prompt, width=32, height=32, num_frames=5, fps=8,
                            num_inference_steps=steps, guidance_scale=guidance, seed=seed)


FIRST = params("a red fox in snow", 1, steps=6)
JOINER = params("waves on a beach", 2, steps=2, guidance=3.0)


@pytest.fixture(scope="module")
def runner(tiny_model):  # type: ignore[no-untyped-def]
    return PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)


def alone(runner: PipelineRunner, p: GenerationParams) -> np.ndarray:
    return runner.run([("x", p)]).frames["x"]


def test_a_row_offered_mid_batch_joins_finishes_first_and_equals_its_lone_run(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=2, live=1)
    finished: list[tuple[str, np.ndarray]] = []

    def on_step(keys: list[str], step: int, total: int) -> None:
        if keys == ["first"] and step == 2:  # on the lane's thread, before the boundary after step 2
            assert joins.offer([("joiner", JOINER)])

    real = runner.family
    runner.family = evaluations = StepRecorder(real)
    try:
        outcome = runner.run([("first", FIRST)], on_step, joins=joins,
                             on_finished=lambda key, frames: finished.append((key, frames)))
    finally:
        runner.family = real
    assert [key for key, _ in finished] == ["joiner", "first"]  # 2 steps from step 2 end before 6
    assert outcome.finished == {"first", "joiner"} and outcome.frames == {}
    assert joins.joined == 1 and joins.closed
    # The joiner shares the first row's transformer calls, each row at its own step: 6, not 8.
    assert len(evaluations.steps) == 6
    assert outcome.calls == []  # a batch that changed size is no sample of one size's cost
    videos = dict(finished)
    assert np.abs(videos["joiner"] - alone(runner, JOINER)).max() <= 1e-5
    assert np.abs(videos["first"] - alone(runner, FIRST)).max() <= 1e-5


def test_a_row_cancelled_while_it_waited_stops_at_step_zero_and_the_batch_still_ends(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=4, live=1)
    finished: list[str] = []

    def on_step(keys: list[str], step: int, total: int) -> None:
        if step == 1:
            assert joins.offer([("cancelled", JOINER)])

    outcome = runner.run([("first", params("a city at night", 3, steps=3))], on_step,
                         should_stop=lambda key: key == "cancelled", joins=joins,
                         on_finished=lambda key, frames: finished.append(key))
    assert finished == ["first"]
    assert outcome.stopped_at == {"cancelled": 0}
    assert joins.closed and not joins.offer([("late", JOINER)])


def test_without_on_finished_the_videos_are_in_the_outcome_and_a_fixed_batch_is_timed(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=4, live=1)
    outcome = runner.run([("first", params("a red fox in snow", 4, steps=3))], joins=joins)
    assert set(outcome.frames) == {"first"} and outcome.finished == set()
    assert [call.batch_size for call in outcome.calls] == [1] and joins.closed


class OutOfMemoryWhenTwo:
    """The real family, but an evaluation of more than one row runs out of device memory."""

    def __init__(self, real: object) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def denoise_step(self, rows: list[object]) -> object:
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.real.denoise_step(rows)  # type: ignore[attr-defined]


def test_a_batch_that_runs_out_of_memory_once_a_row_joined_runs_both_alone(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=4, live=1)
    finished: dict[str, np.ndarray] = {}

    def on_step(keys: list[str], step: int, total: int) -> None:
        if keys == ["first"] and step == 2 and not joins.closed:
            joins.offer([("joiner", JOINER)])

    real = runner.family
    runner.family = OutOfMemoryWhenTwo(real)  # type: ignore[assignment]
    try:
        outcome = runner.run([("first", FIRST)], on_step, joins=joins,
                             on_finished=lambda key, frames: finished.__setitem__(key, frames))
    finally:
        runner.family = real
    assert set(finished) == {"first", "joiner"} and outcome.errors == {}
    assert outcome.fit_batch_size == 1 and joins.closed  # no joiners while a batch is split
    for key, p in (("first", FIRST), ("joiner", JOINER)):
        assert np.abs(finished[key] - alone(runner, p)).max() <= 1e-5


def test_a_batch_asked_to_make_way_parks_its_rows_which_resume_to_the_same_videos(runner: PipelineRunner) -> None:
    second = params("a city at night", 5, steps=4, guidance=1.0)  # no guidance: its own kind of call
    joins = JoinQueue(limit=4, live=2)

    def on_step(keys: list[str], step: int, total: int) -> None:
        if "first" in keys and step == 3:
            joins.park_all()

    parked = runner.run([("first", FIRST), ("second", second)], on_step, joins=joins,
                        on_finished=lambda key, frames: pytest.fail(f"{key} finished while it should be parked"))
    assert sorted(parked.parked) == ["first", "second"] and joins.closed and not joins.offer([("late", JOINER)])
    assert parked.parked["first"].step == 3 and 2 <= parked.parked["second"].step <= 4
    assert parked.calls == []  # a batch whose rows left early is no sample of a whole call's cost
    finished: dict[str, np.ndarray] = {}
    resumed = runner.run([("first", FIRST), ("second", second), ("fresh", JOINER)], resume=parked.parked.get,
                         on_finished=lambda key, frames: finished.__setitem__(key, frames))
    assert set(finished) == {"first", "second", "fresh"} and resumed.calls == []
    for key, p in (("first", FIRST), ("second", second), ("fresh", JOINER)):
        assert np.abs(finished[key] - alone(runner, p)).max() <= 1e-5


def test_a_row_waiting_to_join_a_batch_that_makes_way_never_starts(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=4, live=1)

    def on_step(keys: list[str], step: int, total: int) -> None:
        if step == 2:
            assert joins.offer([("joiner", JOINER)])
            joins.park_all()

    outcome = runner.run([("first", FIRST)], on_step, joins=joins,
                         on_finished=lambda key, frames: pytest.fail(f"{key} finished"))
    assert list(outcome.parked) == ["first"] and outcome.unstarted == ["joiner"]
