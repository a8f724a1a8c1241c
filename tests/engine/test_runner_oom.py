"""Out-of-memory splitting in PipelineRunner, against the real tiny model with injected OOMs."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import pytest
import torch

from reelserve.engine.runner import PipelineRunner, is_out_of_memory
from reelserve.schemas import GenerationParams

PROMPTS = ["a red fox in snow", "waves on a beach", "a city at night", "a kite over a hill"]
CPU_OOM_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 123456789 bytes. Error code 12 (Cannot allocate memory)"
)


def cuda_oom() -> Exception:
    return torch.OutOfMemoryError("CUDA out of memory (injected)")


def cpu_oom() -> Exception:
    return RuntimeError(CPU_OOM_MESSAGE)


def params(prompt: str, seed: int) -> GenerationParams:
    return GenerationParams(
        model="tiny", prompt=prompt, width=64, height=48, num_frames=9, fps=8,
        num_inference_steps=6, guidance_scale=5.0, seed=seed,
    )


def batch_of(n: int) -> list[tuple[str, GenerationParams]]:
    return [(str(i), params(PROMPTS[i], seed=100 + i)) for i in range(n)]


class OutOfMemoryFamily:
    """The real model family, but a batch runs out of memory when it has more than ``max_rows``
    rows or holds a row seeded with one of ``poisoned_seeds``.

    With ``at_step`` the error is raised inside the denoising loop after that step (as a real OOM
    mid-loop would be), otherwise before the loop starts. ``before_raise`` runs just before.
    """

    def __init__(
        self,
        real: Any,
        max_rows: int | None = None,
        poisoned_seeds: Collection[int] = (),
        error: Callable[[], Exception] = cuda_oom,
        at_step: int | None = None,
        before_raise: Callable[[], None] | None = None,
    ) -> None:
        self.real = real
        self.max_rows = max_rows
        self.poisoned_seeds = set(poisoned_seeds)
        self.error = error
        self.at_step = at_step
        self.before_raise = before_raise
        self.call_sizes: list[int] = []
        self.doomed = False

    def __getattr__(self, name: str) -> Any:  # denoise_step, decode, pipeline
        return getattr(self.real, name)

    def prepare_rows(self, rows: list[tuple[str, GenerationParams]]) -> Any:
        seeds = [p.seed for _, p in rows]
        self.call_sizes.append(len(seeds))
        too_big = self.max_rows is not None and len(seeds) > self.max_rows
        self.doomed = too_big or bool(self.poisoned_seeds.intersection(seeds))
        if self.doomed and self.at_step is None:
            self._raise()
        return self.real.prepare_rows(rows)

    def scheduler_step(self, rows: list[Any], prediction: Any) -> None:
        self.real.scheduler_step(rows, prediction)
        if self.doomed and rows[0].step == self.at_step:
            self._raise()

    def _raise(self) -> None:
        if self.before_raise is not None:
            self.before_raise()
        raise self.error()


@pytest.fixture(scope="module")
def singles(tiny_model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    return {job_id: runner.run([(job_id, p)]).frames[job_id] for job_id, p in batch_of(len(PROMPTS))}


def runner_over(tiny_model, **options: Any) -> tuple[PipelineRunner, OutOfMemoryFamily]:  # type: ignore[no-untyped-def]
    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    runner.family = family = OutOfMemoryFamily(runner.family, **options)
    return runner, family


def assert_same_as_alone(frames: dict[str, np.ndarray], singles: dict[str, np.ndarray]) -> None:
    for job_id, video in frames.items():
        assert video.shape == (9, 48, 64, 3)
        assert np.abs(video - singles[job_id]).max() <= 1e-4, job_id


@pytest.mark.parametrize("error", [cuda_oom, cpu_oom], ids=["cuda", "cpu"])
def test_row_that_does_not_fit_alone_fails_and_the_rest_complete(tiny_model, singles, error) -> None:  # type: ignore[no-untyped-def]
    runner, pipeline = runner_over(tiny_model, poisoned_seeds={102}, error=error)
    outcome = runner.run(batch_of(4))
    # 4 -> [0, 1] fits; [2, 3] -> [2] fails alone, [3] fits
    assert pipeline.call_sizes == [4, 2, 2, 1, 1]
    assert set(outcome.frames) == {"0", "1", "3"}
    assert_same_as_alone(outcome.frames, singles)
    assert set(outcome.errors) == {"2"}
    assert outcome.errors["2"].code == "out_of_memory"
    assert "does not fit" in outcome.errors["2"].message
    assert outcome.fit_batch_size == 2
    assert outcome.stopped_at == {}
    assert [call.batch_size for call in outcome.calls] == [2, 1]


@pytest.mark.parametrize("error", [cuda_oom, cpu_oom], ids=["cuda", "cpu"])
def test_batch_too_big_is_halved_until_it_fits(tiny_model, singles, error) -> None:  # type: ignore[no-untyped-def]
    runner, pipeline = runner_over(tiny_model, max_rows=2, error=error)
    steps: list[tuple[list[str], int]] = []
    outcome = runner.run(batch_of(4), on_step=lambda ids, step, total: steps.append((ids, step)))
    assert pipeline.call_sizes == [4, 2, 2]
    assert set(outcome.frames) == {"0", "1", "2", "3"}
    assert_same_as_alone(outcome.frames, singles)
    assert outcome.errors == {}
    assert outcome.fit_batch_size == 2
    # progress restarts with each call after the split
    assert steps == [(["0", "1"], s) for s in range(1, 7)] + [(["2", "3"], s) for s in range(1, 7)]


def test_odd_batch_splits_down_to_single_rows(tiny_model, singles) -> None:  # type: ignore[no-untyped-def]
    runner, pipeline = runner_over(tiny_model, max_rows=1)
    outcome = runner.run(batch_of(3))
    assert pipeline.call_sizes == [3, 2, 1, 1, 1]  # [0, 1, 2] -> [0, 1] -> [0], [1]; then [2]
    assert set(outcome.frames) == {"0", "1", "2"}
    assert_same_as_alone(outcome.frames, singles)
    assert outcome.fit_batch_size == 1


def test_single_row_that_does_not_fit(tiny_model) -> None:  # type: ignore[no-untyped-def]
    runner, pipeline = runner_over(tiny_model, poisoned_seeds={100})
    outcome = runner.run(batch_of(1))
    assert pipeline.call_sizes == [1]
    assert outcome.frames == {}
    assert outcome.errors["0"].code == "out_of_memory"
    assert outcome.fit_batch_size is None
    assert outcome.calls == []


def test_other_errors_propagate_without_retry(tiny_model) -> None:  # type: ignore[no-untyped-def]
    runner, pipeline = runner_over(tiny_model, max_rows=2, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        runner.run(batch_of(4))
    assert pipeline.call_sizes == [4]


def test_error_after_a_split_still_propagates(tiny_model) -> None:  # type: ignore[no-untyped-def]
    errors = iter([cuda_oom(), ValueError("bad latents")])
    runner, pipeline = runner_over(tiny_model, max_rows=0, error=lambda: next(errors))
    with pytest.raises(ValueError, match="bad latents"):
        runner.run(batch_of(2))
    assert pipeline.call_sizes == [2, 1]


def test_oom_mid_loop_does_not_retry_a_row_cancelled_before_it(tiny_model, singles) -> None:  # type: ignore[no-untyped-def]
    cancelled: set[str] = set()
    live_per_step: list[list[str]] = []

    def on_step(ids: list[str], step: int, total: int) -> None:
        live_per_step.append(ids)
        if step == 2 and len(live_per_step) == 2:  # the first call's step 2
            cancelled.add("1")

    runner, pipeline = runner_over(tiny_model, max_rows=2, at_step=3)
    outcome = runner.run(batch_of(4), on_step=on_step, should_stop=cancelled.__contains__)
    assert outcome.stopped_at == {"1": 2}
    assert pipeline.call_sizes == [4, 1, 2]  # [0, 1] lost row 1, so only [0] ran again; then [2, 3]
    assert set(outcome.frames) == {"0", "2", "3"}
    assert_same_as_alone(outcome.frames, singles)
    assert all("1" not in ids for ids in live_per_step[3:])
    assert outcome.fit_batch_size == 2


def test_row_cancelled_while_its_batch_ran_out_of_memory_is_not_run(tiny_model, singles) -> None:  # type: ignore[no-untyped-def]
    cancelled: set[str] = set()
    runner, pipeline = runner_over(tiny_model, max_rows=2, before_raise=lambda: cancelled.add("3"))
    outcome = runner.run(batch_of(4), should_stop=cancelled.__contains__)
    assert pipeline.call_sizes == [4, 2, 1]
    assert outcome.stopped_at == {"3": 0}
    assert set(outcome.frames) == {"0", "1", "2"}
    assert_same_as_alone(outcome.frames, singles)
    assert outcome.errors == {}


def test_timings_after_a_split(tiny_model) -> None:  # type: ignore[no-untyped-def]
    runner, _ = runner_over(tiny_model, max_rows=2)
    outcome = runner.run(batch_of(4))
    assert [call.batch_size for call in outcome.calls] == [2, 2]
    for call in outcome.calls:
        assert call.steps == 6
        assert call.step_s is not None and call.step_s > 0
        assert call.overhead_s >= 0
        assert call.total_s == pytest.approx(call.steps * call.step_s + call.overhead_s)
    # the run's wall time covers every call and the failed one
    assert sum(call.total_s for call in outcome.calls) < outcome.inference_s


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError(CPU_OOM_MESSAGE), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("Expected all tensors to be on the same device"), False),
        (ValueError("out of memory"), False),  # not an allocator's error type
        (MemoryError("Unable to allocate 3.00 GiB for an array"), True),  # numpy's, e.g. decoding to np
    ],
)
def test_out_of_memory_detection(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected
