"""The fused feed-forward computes what diffusers' ``FeedForward`` does, only where it can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers.models.attention import FeedForward

from reelserve.accel.fused_ffn import FusedFeedForward, fuse_feed_forwards, fusable, unfuse_feed_forwards
from reelserve.accel.options import AccelerationOptions
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.models.tiny import build_ti2v_5b_layout


def test_a_fused_feed_forward_matches_diffusers_within_rounding_and_unfuses_to_the_same_bits() -> None:
    transformer = build_ti2v_5b_layout(0).transformer.eval()
    feed_forwards = [m for m in transformer.modules() if isinstance(m, FeedForward)]
    states = torch.randn(3, 10, feed_forwards[0].net[0].proj.in_features, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = [ffn(states) for ffn in feed_forwards]
        keys = list(transformer.state_dict())
        assert fuse_feed_forwards(transformer) == len(feed_forwards) > 0
        assert fuse_feed_forwards(transformer) == 0  # installed once
        assert all(isinstance(vars(ffn)["forward"], FusedFeedForward) for ffn in feed_forwards)
        assert list(transformer.state_dict()) == keys  # the module tree and its weights stay as they were
        fused = [ffn(states) for ffn in feed_forwards]
        unfuse_feed_forwards(transformer)
        after = [ffn(states) for ffn in feed_forwards]
    for plain, fast, again in zip(before, fused, after, strict=True):
        assert fast.shape == plain.shape
        assert 0 < (fast - plain).abs().max() <= 1e-5 * plain.abs().max()  # another kernel's rounding
        assert torch.equal(again, plain)


def test_only_float32_cpu_feed_forwards_with_the_tanh_gelu_are_fused() -> None:
    assert fusable(FeedForward(8, inner_dim=16, activation_fn="gelu-approximate"))
    assert not fusable(FeedForward(8, inner_dim=16, activation_fn="gelu"))  # erf GELU: not what oneDNN fuses here
    assert not fusable(FeedForward(8, inner_dim=16, activation_fn="gelu-approximate").to(torch.bfloat16))
    assert not fusable(torch.nn.Linear(8, 8))
    half = build_ti2v_5b_layout(0).transformer.to(torch.bfloat16)
    assert fuse_feed_forwards(half) == 0


def test_micro_videos_with_it_equal_the_plain_ones_within_float_rounding(micro_rows: Callable[[int], list[Any]]) -> None:
    model = load_model("micro", LoadOptions(device="cpu", accelerations=AccelerationOptions(fused_ffn=True)))
    assert model.accelerated is not None and model.accelerated.fused_ffn == model.pipeline.transformer.config.num_layers
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    rows = micro_rows(8)
    fused = runner.run(rows).frames
    unfuse_feed_forwards(model.pipeline.transformer)
    plain = runner.run(rows).frames
    for key in plain:
        assert not np.array_equal(fused[key], plain[key])  # it did run
        assert np.abs(fused[key] - plain[key]).max() <= 1e-4  # rounding, not another video
