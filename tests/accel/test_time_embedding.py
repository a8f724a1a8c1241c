"""The shared time embedding: one timestep embedding per row when its tokens share the timestep, the
per-token path otherwise, and videos equal to the per-token ones within float rounding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reelserve.accel.options import AccelerationOptions
from reelserve.accel.time_embedding import SharedTimeEmbedding
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.models.tiny import build_ti2v_5b_layout


def test_micro_videos_equal_the_per_token_path_within_float_rounding(micro_rows: Callable[[int], list[Any]]) -> None:
    model = load_model("micro", LoadOptions(device="cpu", accelerations=AccelerationOptions(shared_time_embedding=True)))
    [shared] = model.accelerated.time_embedding  # type: ignore[union-attr]
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    with_it = runner.run(micro_rows(10)).frames
    assert shared.shared == 10 * 2 and shared.full == 0  # every step, cond and uncond, one embedding per row
    shared.remove()
    without = runner.run(micro_rows(10)).frames
    for key in with_it:
        difference = np.abs(with_it[key] - without[key]).max()
        assert difference <= 1e-4, difference  # float rounding of the time MLP, not a different video
        assert not np.array_equal(with_it[key], np.zeros_like(with_it[key]))


def test_rows_whose_tokens_differ_in_timestep_run_per_token() -> None:
    pipe = build_ti2v_5b_layout(0)
    embedder = pipe.transformer.condition_embedder
    shared = SharedTimeEmbedding(pipe.transformer)
    tokens, text = 12, torch.randn(2, 8, pipe.transformer.config.text_dim)
    held_first_frame = torch.full((2, tokens), 700.0)
    held_first_frame[:, :4] = 0.0  # image to video: the first frame's tokens at timestep 0
    with torch.inference_mode():
        wrapped = embedder(held_first_frame.flatten(), text, None, timestep_seq_len=tokens)
        shared.remove()
        plain = embedder(held_first_frame.flatten(), text, None, timestep_seq_len=tokens)
    assert (shared.shared, shared.full) == (0, 1)
    assert all(torch.equal(a, b) for a, b in zip(wrapped[:3], plain[:3], strict=True))


def test_uniform_rows_get_one_token_that_broadcasts_to_the_per_token_values() -> None:
    pipe = build_ti2v_5b_layout(0)
    embedder = pipe.transformer.condition_embedder
    tokens, text = 12, torch.randn(3, 8, pipe.transformer.config.text_dim)
    timestep = torch.tensor([900.0, 500.0, 20.0]).repeat_interleave(tokens)
    with torch.inference_mode():
        plain = embedder(timestep, text, None, timestep_seq_len=tokens)
        shared = SharedTimeEmbedding(pipe.transformer)
        wrapped = embedder(timestep, text, None, timestep_seq_len=tokens)
    assert shared.shared == 1
    assert wrapped[0].shape == (3, 1, plain[0].shape[-1]) and wrapped[1].shape == (3, 1, plain[1].shape[-1])
    for a, b in zip(wrapped[:2], plain[:2], strict=True):
        assert torch.allclose(a.expand_as(b), b, atol=1e-6)
    assert torch.equal(wrapped[2], plain[2])  # the text side as it was


def test_the_broadcast_embedding_makes_the_same_bits_as_the_expanded_one() -> None:
    """The blocks' modulation broadcasting one token's embedding over the row computes each element
    as it did from the embedding expanded to every token (what this class handed on before)."""
    pipe = build_ti2v_5b_layout(0)
    transformer = pipe.transformer
    shared = SharedTimeEmbedding(transformer)
    broadcast = transformer.condition_embedder.forward

    def expanded(*args: object, timestep_seq_len: int | None = None) -> object:
        temb, projected, text, image = broadcast(*args, timestep_seq_len=timestep_seq_len)
        return temb.expand(-1, timestep_seq_len, -1), projected.expand(-1, timestep_seq_len, -1), text, image

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, transformer.config.in_channels, 2, 4, 4, generator=generator)
    tokens = 2 * 2 * 2  # frames x (height / 2) x (width / 2)
    timestep = torch.tensor([[800.0] * tokens, [300.0] * tokens])
    text = torch.randn(2, 8, transformer.config.text_dim, generator=generator)
    with torch.inference_mode():
        one = transformer(latents, timestep, text, return_dict=False)[0]
        transformer.condition_embedder.forward = expanded
        every = transformer(latents, timestep, text, return_dict=False)[0]
    assert shared.shared == 2
    assert torch.equal(one, every) and one.abs().sum() > 0
