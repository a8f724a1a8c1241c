"""The loop's side of step scheduling: a running batch is as urgent as its most urgent row still
running, and a batch opened for a tier's reserved share takes no joiners (its time is that tier's)."""

from __future__ import annotations

from typing import Any

from engine_parts import make_engine, parts  # noqa: F401 - fixtures by name

from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.step_scheduling import RunningRows
from reelserve.schemas import GenerationParams, Job

PARAMS = GenerationParams(model="tiny", prompt="a red fox", width=32, height=32, num_frames=5, fps=8,
                          num_inference_steps=3, guidance_scale=5.0, seed=1)
LEVELS = {"realtime": 0, "standard": 1, "batch": 2}


def level_of(job: Job) -> int:
    return LEVELS[job.priority or "standard"]


def test_a_batch_is_as_urgent_as_its_rows_still_running() -> None:
    standard, realtime = Job(params=PARAMS, priority="standard"), Job(params=PARAMS, priority="realtime")
    rows = RunningRows([standard], started=0.0)
    assert rows.running_level(level_of) == 1
    rows.join(realtime)
    assert rows.running_level(level_of) == 0
    rows.finished.add(realtime.id)  # the realtime row left: the batch makes way for realtime work again
    assert rows.running_level(level_of) == 1
    rows.finished.add(standard.id)
    assert rows.running_level(level_of) == 0  # nothing runs: the last row's level, never an error


async def test_a_batch_opened_for_a_reserved_share_takes_no_joiners(parts: dict[str, Any]) -> None:  # noqa: F811
    steps = make_engine(parts, max_batch_size=4, step_policy=StepPolicy(preempt=False)).worker.batches.steps
    owed = RunningRows([Job(params=PARAMS, priority="batch")], started=0.0)
    joins, feeding = steps.start(owed, 0, True, lambda: True, opened_for=2)
    assert joins is not None and feeding is None  # nothing to feed: it neither grows nor (here) makes way
    steps.end(joins)
    ordinary = RunningRows([Job(params=PARAMS, priority="batch")], started=0.0)
    joins, feeding = steps.start(ordinary, 0, True, lambda: True)
    assert joins is not None and feeding is not None
    feeding.task.cancel()
    steps.end(joins)
