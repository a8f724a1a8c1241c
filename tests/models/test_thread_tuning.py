"""Torch's CPU thread count, chosen by timing the served model, and applied on the thread that runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from reelserve.engine.runner import PipelineRunner
from reelserve.engine.cost_model import CallTiming
from reelserve.models.thread_tuning import candidates, choose_threads, tune_cpu_threads
from reelserve.schemas import GenerationParams


@pytest.mark.parametrize(("cores", "expected"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_candidates_double_up_to_the_cores(cores: int, expected: list[int]) -> None:
    assert candidates(cores) == expected


def fake_measure(step_s: dict[int, float], overhead_s: dict[int, float], calls: list[int]) -> Any:
    """A call whose parts cost what the caller's thread count says."""

    def measure() -> CallTiming:
        threads = torch.get_num_threads()
        calls.append(threads)
        return CallTiming(batch_size=4, steps=2, step_s=step_s[threads], overhead_s=overhead_s[threads],
                          total_s=overhead_s[threads] + 2 * step_s[threads])

    return measure


def chosen_on_its_own_thread(measure: Any, options: list[int], steps: int = 25) -> tuple[Any, int]:
    result: list[Any] = []

    def choose() -> None:  # a thread of its own: the test's thread keeps its count
        choice = choose_threads(measure, options, steps)
        result.extend([choice, torch.get_num_threads()])

    thread = threading.Thread(target=choose)
    thread.start()
    thread.join()
    return result[0], result[1]


def test_the_fastest_count_at_the_default_steps_wins_and_is_left_set() -> None:
    calls: list[int] = []
    # One thread wins a short call (less per call) but loses at 25 steps (more per step).
    measure = fake_measure({1: 0.08, 2: 0.05, 4: 0.06}, {1: 0.4, 2: 0.6, 4: 0.7}, calls)
    choice, left = chosen_on_its_own_thread(measure, [1, 2, 4])
    assert choice.threads == 2 and left == 2
    assert choice.seconds == pytest.approx({1: 2.4, 2: 1.85, 4: 2.2})
    assert sorted(calls) == [1, 1, 2, 2, 4, 4]  # every candidate, twice


def test_fewer_threads_win_a_near_tie() -> None:
    choice, left = chosen_on_its_own_thread(fake_measure({1: 0.0416, 2: 0.04}, {1: 0.0, 2: 0.0}, []), [1, 2])
    assert choice.threads == 1 and left == 1
    choice, _ = chosen_on_its_own_thread(fake_measure({1: 0.06, 2: 0.04}, {1: 0.0, 2: 0.0}, []), [1, 2])
    assert choice.threads == 2


def test_tuning_a_real_model_times_the_serving_shape(tiny_model: Any) -> None:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(tune_cpu_threads(tiny_model, 2, cores=2)))
    thread.start()
    thread.join()
    choice = result[0]
    assert choice.threads in (1, 2) and set(choice.seconds) == {1, 2} and all(s > 0 for s in choice.seconds.values())
    timing = tiny_model.last_calls[0]
    assert (timing.batch_size, timing.steps) == (2, 2)


def test_the_runner_applies_its_thread_count_on_the_thread_that_runs(tiny_model: Any) -> None:
    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length, cpu_threads=1)
    row = GenerationParams(model="tiny", prompt="a kite", width=32, height=32, num_frames=5, fps=8,
                           num_inference_steps=2, guidance_scale=1.0, seed=1)
    seen: list[int] = []

    def run() -> None:
        torch.set_num_threads(2)  # what a thread started before the choice would hold
        runner.run([("j1", row)])
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [1]
