"""CfgBatching on real tiny Wan pipelines: one batched forward per step gives the two-pass frames
(within float rounding), every step merges when primed right, and a wrong or missing prime only
costs the merge, never the result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from reelserve.accel.cfg_batching import CfgBatching, find_cfg_batching, prime_pipeline
from reelserve.accel.options import AccelerationOptions
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadedModel, LoadOptions, load_model
from reelserve.models.tiny import TINY_MAX_SEQUENCE_LENGTH, build_a14b_layout
from reelserve.schemas import GenerationParams

STEPS = 4
SEEDS = (1, 2)
# One batched forward rounds differently from two: the frames ([0, 1]) differ by about 7e-7.
PARITY = {"atol": 1e-5, "rtol": 0.0}


def embed(pipeline: Any, prompts: list[str]) -> torch.Tensor:
    embeds, _ = pipeline.encode_prompt(
        prompts, do_classifier_free_guidance=False, max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
        device=torch.device("cpu"),
    )
    return embeds


@contextmanager
def batching(*transformers: torch.nn.Module) -> Iterator[list[CfgBatching]]:
    wrappers = [CfgBatching(t) for t in transformers]
    try:
        yield wrappers
    finally:
        for wrapper in wrappers:
            wrapper.remove()


def frames(pipeline: Any, negative: torch.Tensor | None, guidance: float = 5.0, steps: int = STEPS,
           **extra: Any) -> torch.Tensor:
    prompts = embed(pipeline, ["a red fox in the snow", "waves on a beach"])
    with torch.inference_mode():
        out = pipeline(
            prompt_embeds=prompts, negative_prompt_embeds=negative, height=32, width=32, num_frames=5,
            num_inference_steps=steps, guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in SEEDS], output_type="np",
            max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, **extra,
        ).frames
    return torch.from_numpy(np.asarray(out))


@pytest.fixture(scope="module")
def pipe() -> Any:
    """A tiny pipeline of this module's own: tests wrap and unwrap its transformer."""
    return load_model("tiny", LoadOptions(device="cpu")).pipeline


@pytest.fixture(scope="module")
def negative(pipe: Any) -> torch.Tensor:
    return embed(pipe, ["", ""])


@pytest.fixture(scope="module")
def two_passes(pipe: Any, negative: torch.Tensor) -> torch.Tensor:
    return frames(pipe, negative)


def test_primed_batching_merges_every_step_and_matches_two_passes(
    pipe: Any, negative: torch.Tensor, two_passes: torch.Tensor
) -> None:
    with batching(pipe.transformer) as [wrapper]:
        wrapper.prime(negative)
        batched = frames(pipe, negative)
    assert (wrapper.batched, wrapper.missed) == (STEPS, 0)
    torch.testing.assert_close(batched, two_passes, **PARITY)
    assert not torch.equal(batched, two_passes)  # it really took the batched kernels


def test_unprimed_wrapper_runs_the_two_passes_unchanged(
    pipe: Any, negative: torch.Tensor, two_passes: torch.Tensor
) -> None:
    with batching(pipe.transformer) as [wrapper]:
        out = frames(pipe, negative)
    assert (wrapper.batched, wrapper.missed) == (0, 0)
    assert torch.equal(out, two_passes)  # the very same calls: bit-identical


def test_a_wrong_prime_costs_time_never_correctness(
    pipe: Any, negative: torch.Tensor, two_passes: torch.Tensor
) -> None:
    wrong = embed(pipe, ["blurry", "low quality"])
    with batching(pipe.transformer) as [wrapper]:
        wrapper.prime(wrong)
        out = frames(pipe, negative)
    # Every cond pass was batched with the wrong negatives, and every uncond pass refused that half.
    assert (wrapper.batched, wrapper.missed) == (STEPS, STEPS)
    torch.testing.assert_close(out, two_passes, **PARITY)
    # Using the kept half would have been guidance against the wrong negatives: a different video.
    assert (frames(pipe, wrong) - two_passes).abs().max() > 1e-2


def test_two_experts_each_merge_their_own_steps() -> None:
    """Wan2.2 A14B layout: the high-noise expert runs the first steps, the low-noise one the rest."""
    a14b = build_a14b_layout(seed=0)
    a14b.set_progress_bar_config(disable=True)
    negative = embed(a14b, ["", ""])
    steps, extra = 8, {"guidance_scale_2": 3.0}
    reference = frames(a14b, negative, steps=steps, **extra)
    with batching(a14b.transformer, a14b.transformer_2) as wrappers:
        assert find_cfg_batching(a14b) == wrappers
        prime_pipeline(a14b, negative)
        out = frames(a14b, negative, steps=steps, **extra)
    high, low = wrappers
    assert high.batched > 0 and low.batched > 0
    assert (high.batched + low.batched, high.missed + low.missed) == (steps, 0)
    torch.testing.assert_close(out, reference, **PARITY)


# Through the runner, the way the engine calls it.


def params(prompt: str, seed: int, guidance: float = 5.0) -> GenerationParams:
    return GenerationParams(
        model="tiny", prompt=prompt, width=32, height=32, num_frames=5, fps=8,
        num_inference_steps=STEPS, guidance_scale=guidance, seed=seed,
    )


PROMPTS = ["a red fox in snow", "waves on a beach", "a city at night"]


@pytest.fixture(scope="module")
def cfg_model() -> LoadedModel:
    return load_model("tiny", LoadOptions(device="cpu", accelerations=AccelerationOptions(cfg_batching=True)))


@pytest.fixture(scope="module")
def cfg_runner(cfg_model: LoadedModel) -> PipelineRunner:
    return PipelineRunner(
        cfg_model.pipeline, cfg_model.device, cfg_model.max_sequence_length, accelerated=cfg_model.accelerated
    )


@pytest.fixture(scope="module")
def plain_runner(tiny_model: LoadedModel) -> PipelineRunner:
    return PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)


def counters(model: LoadedModel) -> CfgBatching:
    assert model.accelerated is not None
    [wrapper] = model.accelerated.cfg
    wrapper.batched = wrapper.missed = 0
    return wrapper


def test_cancelled_row_leaves_a_cfg_batched_call_and_the_rest_match_their_solo_runs(
    cfg_model: LoadedModel, cfg_runner: PipelineRunner, plain_runner: PipelineRunner
) -> None:
    solo = {
        str(i): plain_runner.run([(str(i), params(p, seed=100 + i))]).frames[str(i)] for i, p in enumerate(PROMPTS)
    }
    steps_seen: list[int] = []
    wrapper = counters(cfg_model)
    outcome = cfg_runner.run(
        [(str(i), params(p, seed=100 + i)) for i, p in enumerate(PROMPTS)],
        on_step=lambda ids, step, total: steps_seen.append(step),
        should_stop=lambda job_id: job_id == "1" and steps_seen[-1] >= 2,
    )
    assert outcome.stopped_at == {"1": 2}
    assert set(outcome.frames) == {"0", "2"}
    # The re-prime with the sliced negatives kept every step merged after the row left.
    assert (wrapper.batched, wrapper.missed) == (STEPS, 0)
    for job_id in ("0", "2"):
        torch.testing.assert_close(
            torch.from_numpy(outcome.frames[job_id]), torch.from_numpy(solo[job_id]), **PARITY
        )


def test_guidance_one_has_no_uncond_pass_to_merge(
    cfg_model: LoadedModel, cfg_runner: PipelineRunner, plain_runner: PipelineRunner
) -> None:
    wrapper = counters(cfg_model)
    batch = [("a", params("a red fox in snow", 1, guidance=1.0)), ("b", params("waves", 2, guidance=1.0))]
    out = cfg_runner.run(batch).frames
    assert (wrapper.batched, wrapper.missed) == (0, 0)  # the runner primes with no negatives: nothing doubled
    reference = plain_runner.run(batch).frames
    for job_id in ("a", "b"):
        assert np.array_equal(out[job_id], reference[job_id])


def test_a_model_keeping_modules_in_float32_batches_in_its_own_dtype() -> None:
    """Micro in bfloat16 keeps its time embedder and modulation table in float32, and the latter is
    its first parameter: the negatives still join the prompts in bfloat16."""

    def runner(options: AccelerationOptions) -> tuple[LoadedModel, PipelineRunner]:
        model = load_model("micro", LoadOptions(device="cpu", dtype="bfloat16", accelerations=options))
        return model, PipelineRunner(model.pipeline, model.device, model.max_sequence_length,
                                     accelerated=model.accelerated)

    row = [("a", GenerationParams(model="micro", prompt="a red circle moving right", width=64, height=64,
                                  num_frames=5, fps=8, num_inference_steps=2, guidance_scale=5.0, seed=1))]
    model, batched = runner(AccelerationOptions(cfg_batching=True))
    assert next(model.pipeline.transformer.parameters()).dtype == torch.float32  # the case at hand
    wrapper = counters(model)
    out = batched.run(row).frames["a"]
    assert (wrapper.batched, wrapper.missed) == (2, 0)
    reference = runner(AccelerationOptions())[1].run(row).frames["a"]
    # bfloat16 rounds the two ways apart: 0.002 on average on [0, 1] pixels, 0.1 at worst
    assert np.abs(out - reference).mean() < 0.01
