"""Regional compilation on the tiny model: warm-up compiles every batch size the server will run at
its default clip shape, so the serving path compiles nothing; a shape warm-up did not cover does."""

from __future__ import annotations

import numpy as np
import torch

from reelserve.accel.compile import compiled_graphs, is_compiled
from reelserve.accel.options import AccelerationOptions
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadedModel, LoadOptions, load_model
from reelserve.schemas import GenerationParams

STEPS = 2  # the step count does not enter the graphs' shapes


def params(model: LoadedModel, seed: int, height: int | None = None) -> GenerationParams:
    limits = model.limits
    return GenerationParams(
        model="tiny", prompt=f"a red fox, take {seed}", width=limits.default_width,
        height=height or limits.default_height, num_frames=limits.default_frames, fps=8,
        num_inference_steps=STEPS, guidance_scale=limits.default_guidance, seed=seed,
    )


def test_compiled_warm_up_leaves_no_recompiles_on_the_serving_path(tiny_model: LoadedModel) -> None:
    torch.compiler.reset()  # no graphs or dynamic-shape decisions left by another test
    model = load_model("tiny", LoadOptions(device="cpu", accelerations=AccelerationOptions(compile=True)))
    assert model.accelerated is not None
    assert is_compiled(model.pipeline.transformer)
    assert model.accelerated.describe() == ["compile"]

    before = compiled_graphs()
    model.warm_up(1, batch_sizes=(1, 2))
    warmed = compiled_graphs()
    assert warmed > before

    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    one = runner.run([("a", params(model, 1))]).frames
    two = runner.run([("b", params(model, 2)), ("c", params(model, 3))]).frames
    assert compiled_graphs() == warmed, "a warmed-up batch shape compiled again on the serving path"
    assert set(one) | set(two) == {"a", "b", "c"}

    # Compiled kernels round differently from eager ones, within float tolerance.
    eager = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    reference = eager.run([("a", params(model, 1))]).frames["a"]
    assert np.abs(one["a"] - reference).max() <= 1e-4

    # The counter does move: a clip shape warm-up never ran compiles on first use.
    runner.run([("d", params(model, 4, height=model.limits.default_height + model.limits.spatial_multiple))])
    assert compiled_graphs() > warmed
