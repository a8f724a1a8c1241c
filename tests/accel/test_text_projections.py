"""The text side of the transformer (text embedder, cross-attention keys and values) computed once per
batch: the videos are bit-identical with and without it, the work is really skipped, and a new
batch's prompts are never answered from an old batch's tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from reelserve.accel.options import AccelerationOptions
from reelserve.accel.text_projections import TextProjectionMemo
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.models.tiny import build_a14b_layout
from reelserve.schemas import GenerationParams

STEPS = 4


def rows(prompts: list[str], guidance: float = 5.0) -> list[tuple[str, GenerationParams]]:
    return [(f"j{i}", GenerationParams(model="tiny", prompt=prompt, width=32, height=32, num_frames=5, fps=8,
                                       num_inference_steps=STEPS, guidance_scale=guidance, seed=i))
            for i, prompt in enumerate(prompts)]


@pytest.mark.parametrize("cfg_batching", [False, True])
def test_videos_are_bit_identical_and_the_text_side_runs_once_per_batch(cfg_batching: bool) -> None:
    model = load_model("tiny", LoadOptions(device="cpu", accelerations=AccelerationOptions(cfg_batching=cfg_batching)))
    memo = model.accelerated.text_memo  # type: ignore[union-attr]
    assert memo is not None and memo.wrapped  # on the CPU it is always there
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    batch = rows(["a red kite", "a blue boat"])
    remembered = runner.run(batch)
    misses, hits = memo.misses, memo.hits
    memo.remove()
    plain = runner.run(batch)
    for key in ("j0", "j1"):
        assert np.array_equal(remembered.frames[key], plain.frames[key])
    modules = len(memo_modules(model.pipeline.transformer))
    passes = 1 if cfg_batching else 2  # the cond and uncond passes have different text
    assert misses == modules * passes  # the first step only
    assert hits == modules * passes * (STEPS - 1)


def memo_modules(transformer: torch.nn.Module) -> list[Any]:
    probe = TextProjectionMemo([transformer])
    try:
        return probe.wrapped
    finally:
        probe.remove()


def test_a_new_batch_gets_its_own_prompts_not_the_last_ones() -> None:
    model = load_model("tiny", LoadOptions(device="cpu"))
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    runner.run(rows(["a red kite"]))
    after_red = runner.run(rows(["a green tree"])).frames["j0"]
    model.accelerated.text_memo.remove()  # type: ignore[union-attr]
    alone = runner.run(rows(["a green tree"])).frames["j0"]
    assert np.array_equal(after_red, alone)


def test_both_experts_of_a_two_expert_model_are_covered() -> None:
    pipe = build_a14b_layout(0)
    memo = TextProjectionMemo([pipe.transformer, pipe.transformer_2])
    try:
        per_expert = len(memo.wrapped) // 2
        assert per_expert == 1 + 3 * len(pipe.transformer.blocks)  # embedder; to_k, to_v, norm_k per block
        assert {id(w.module) for w in memo.wrapped} >= {id(pipe.transformer_2.condition_embedder.text_embedder)}
    finally:
        memo.remove()
    assert "forward" not in vars(pipe.transformer.condition_embedder.text_embedder)  # removed: the class's own
