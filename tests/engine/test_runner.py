import numpy as np
import pytest

from reelserve.engine.runner import PipelineRunner
from reelserve.schemas import GenerationParams

PROMPTS = ["a red fox in snow", "waves on a beach", "a city at night"]


def params(prompt: str, seed: int, steps: int = 6) -> GenerationParams:
    return GenerationParams(
        model="tiny", prompt=prompt, width=64, height=48, num_frames=9, fps=8,
        num_inference_steps=steps, guidance_scale=5.0, seed=seed,
    )


@pytest.fixture(scope="module")
def runner(tiny_model):  # type: ignore[no-untyped-def]
    return PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)


@pytest.fixture(scope="module")
def singles(runner):  # type: ignore[no-untyped-def]
    return {
        str(i): runner.run([(str(i), params(p, seed=100 + i))]).frames[str(i)] for i, p in enumerate(PROMPTS)
    }


def test_batched_equals_single(runner, singles) -> None:  # type: ignore[no-untyped-def]
    outcome = runner.run([(str(i), params(p, seed=100 + i)) for i, p in enumerate(PROMPTS)])
    assert set(outcome.frames) == set(singles)
    for job_id, video in outcome.frames.items():
        assert video.shape == (9, 48, 64, 3)
        assert np.abs(video - singles[job_id]).max() <= 1e-4
    # different seeds and prompts really give different videos
    assert np.abs(outcome.frames["0"] - outcome.frames["1"]).max() > 1e-2


def test_seed_decides_the_video(runner) -> None:  # type: ignore[no-untyped-def]
    a = runner.run([("a", params("same", seed=1))]).frames["a"]
    b = runner.run([("b", params("same", seed=2))]).frames["b"]
    assert np.abs(a - b).max() > 1e-2


def test_cancelled_row_leaves_batch_at_step_boundary(runner, singles) -> None:  # type: ignore[no-untyped-def]
    steps_seen: list[int] = []

    def on_step(ids: list[str], step: int, total: int) -> None:
        steps_seen.append(step)

    def should_stop(job_id: str) -> bool:
        return job_id == "1" and steps_seen[-1] >= 2

    batch = [(str(i), params(p, seed=100 + i)) for i, p in enumerate(PROMPTS)]
    outcome = runner.run(batch, on_step=on_step, should_stop=should_stop)
    assert outcome.stopped_at == {"1": 2}
    assert set(outcome.frames) == {"0", "2"}
    for job_id in ("0", "2"):
        assert np.abs(outcome.frames[job_id] - singles[job_id]).max() <= 1e-4


def test_all_rows_stopped_ends_the_call(runner) -> None:  # type: ignore[no-untyped-def]
    steps_seen: list[int] = []
    outcome = runner.run(
        [("a", params("x", 1)), ("b", params("y", 2))],
        on_step=lambda ids, step, total: steps_seen.append(step),
        should_stop=lambda job_id: True,
    )
    assert outcome.frames == {}
    assert outcome.stopped_at == {"a": 1, "b": 1}
    assert steps_seen == [1]
    assert outcome.calls == []  # no videos, no decode: not a timing the cost model should learn from


def test_rows_of_different_shapes_refused(runner) -> None:  # type: ignore[no-untyped-def]
    wide = params("y", 2).model_copy(update={"width": 96})
    with pytest.raises(AssertionError, match="different shapes"):
        runner.run([("a", params("x", 1)), ("b", wide)])


def test_rows_of_one_shape_with_their_own_steps_share_a_batch(runner) -> None:  # type: ignore[no-untyped-def]
    short = params("y", 2, steps=3)
    outcome = runner.run([("a", params("x", 1, steps=5)), ("b", short)])
    assert np.abs(outcome.frames["b"] - runner.run([("b", short)]).frames["b"]).max() <= 1e-5


def test_call_timing_without_out_of_memory(runner) -> None:  # type: ignore[no-untyped-def]
    outcome = runner.run([(str(i), params(p, seed=100 + i)) for i, p in enumerate(PROMPTS)])
    assert outcome.errors == {}
    assert outcome.fit_batch_size is None
    [call] = outcome.calls
    assert (call.batch_size, call.steps) == (3, 6)
    assert call.step_s is not None and call.step_s > 0
    assert call.overhead_s > 0  # text encoding and VAE decode
    assert call.total_s == pytest.approx(call.steps * call.step_s + call.overhead_s)
    assert call.total_s <= outcome.inference_s


def test_one_step_call_has_no_step_time(runner) -> None:  # type: ignore[no-untyped-def]
    [call] = runner.run([("a", params("x", 1, steps=1))]).calls
    assert (call.batch_size, call.steps, call.step_s) == (1, 1, None)
    assert call.overhead_s == call.total_s > 0
