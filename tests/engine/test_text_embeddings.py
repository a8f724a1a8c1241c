"""The text-embedding cache: the LRU on its own, then real pipelines run with and without it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from reelserve.engine.runner import BatchOutcome, PipelineRunner
from reelserve.engine.text_embeddings import TextEmbeddingCache, TextEmbeddingKey
from reelserve.metrics import Metrics
from reelserve.models import LoadOptions, load_model
from reelserve.models.tiny import TINY_MAX_SEQUENCE_LENGTH, build_a14b_layout
from reelserve.schemas import GenerationParams
from reelserve.model_host import text_embedding_cache
from reelserve.settings import Settings

CPU = torch.device("cpu")
PROMPTS = ["a red fox in snow", "waves on a beach", "a city at night", "a red fox in snow"]


def key(prompt: str, length: int = 8) -> TextEmbeddingKey:
    return TextEmbeddingKey(prompt, length, torch.float32, CPU)


def embeds(length: int = 8, used: int | None = None, dim: int = 4) -> torch.Tensor:
    """A (1, length, dim) tensor whose first ``used`` rows are non-zero and the rest zero padding."""
    t = torch.zeros(1, length, dim)
    t[:, : length if used is None else used] = torch.arange(1.0, dim + 1)
    return t


# --- the LRU ---------------------------------------------------------------------------------


def test_counts_hits_and_misses_and_returns_what_was_put() -> None:
    seen: list[bool] = []
    cache = TextEmbeddingCache(max_entries=4, max_bytes=2**20, on_lookup=seen.append)
    assert cache.get(key("a")) is None
    cache.put(key("a"), embeds())
    got = cache.get(key("a"))
    assert got is not None and torch.equal(got, embeds())
    assert (cache.hits, cache.misses, cache.evictions) == (1, 1, 0)
    assert seen == [False, True]


def test_evicts_least_recently_used_by_entries() -> None:
    cache = TextEmbeddingCache(max_entries=2, max_bytes=2**20)
    cache.put(key("a"), embeds())
    cache.put(key("b"), embeds())
    assert cache.get(key("a")) is not None  # a is now the most recent
    cache.put(key("c"), embeds())
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.get(key("b")) is None
    assert cache.get(key("a")) is not None and cache.get(key("c")) is not None


def test_evicts_by_bytes() -> None:
    one = embeds().nbytes  # 8 rows x 4 float32 = 128 bytes
    cache = TextEmbeddingCache(max_entries=100, max_bytes=2 * one + one // 2)
    for name in "abc":
        cache.put(key(name), embeds())
    assert len(cache) == 2 and cache.evictions == 1 and cache.nbytes == 2 * one
    assert cache.get(key("a")) is None
    cache.put(key("huge", length=64), embeds(length=64))  # larger than the whole budget: not kept
    assert len(cache) == 2 and cache.evictions == 1


def test_keys_are_separate_by_max_sequence_length() -> None:
    cache = TextEmbeddingCache(max_entries=4, max_bytes=2**20)
    cache.put(key("a", length=8), embeds(length=8))
    assert cache.get(key("a", length=16)) is None
    cache.put(key("a", length=16), embeds(length=16))
    short, long = cache.get(key("a", length=8)), cache.get(key("a", length=16))
    assert short is not None and short.shape == (1, 8, 4)
    assert long is not None and long.shape == (1, 16, 4)
    assert len(cache) == 2


def test_keeps_no_padding_and_restores_the_exact_bits() -> None:
    cache = TextEmbeddingCache(max_entries=4, max_bytes=2**20)
    padded = embeds(length=32, used=5)
    padded[0, 5] = -0.0  # equal to 0.0 but not the same bits: must survive
    cache.put(key("a", length=32), padded)
    assert cache.nbytes == 6 * 4 * 4
    got = cache.get(key("a", length=32))
    assert got is not None and torch.equal(got, padded)
    assert torch.equal(torch.signbit(got), torch.signbit(padded))


def test_zero_entries_keeps_nothing() -> None:
    cache = TextEmbeddingCache(max_entries=0, max_bytes=2**20)
    cache.put(key("a"), embeds())
    assert len(cache) == 0 and cache.get(key("a")) is None and cache.misses == 1


# --- real pipelines --------------------------------------------------------------------------


def params(prompt: str, seed: int, steps: int = 4, model: str = "tiny", **extra: Any) -> GenerationParams:
    fields: dict[str, Any] = {
        "width": 64, "height": 48, "num_frames": 9, "fps": 8, "guidance_scale": 5.0, **extra,
    }
    return GenerationParams(model=model, prompt=prompt, num_inference_steps=steps, seed=seed, **fields)


@contextmanager
def counting_encoder_calls(pipeline: Any) -> Iterator[list[int]]:
    """Counts real forward calls of the pipeline's text encoder."""
    calls: list[int] = []
    handle = pipeline.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def assert_identical(a: BatchOutcome, b: BatchOutcome) -> None:
    assert set(a.frames) == set(b.frames) and a.frames
    for job_id in a.frames:
        assert np.array_equal(a.frames[job_id], b.frames[job_id]), job_id


def test_cached_runs_are_bit_identical_to_uncached(tiny_model) -> None:  # type: ignore[no-untyped-def]
    pipe, length = tiny_model.pipeline, tiny_model.max_sequence_length
    cache = TextEmbeddingCache()
    cached = PipelineRunner(pipe, tiny_model.device, length, text_embeddings=cache)
    uncached = PipelineRunner(pipe, tiny_model.device, length)
    batch = [(str(i), params(p, seed=100 + i)) for i, p in enumerate(PROMPTS)]

    with counting_encoder_calls(pipe) as calls:
        first = cached.run(batch)
    assert len(calls) == 4  # three distinct prompts and the negative "", each encoded alone
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 4)

    with counting_encoder_calls(pipe) as calls:
        second = cached.run(batch)
    assert calls == [] and cache.hits == 4 and cache.misses == 4

    plain = uncached.run(batch)
    assert_identical(first, plain)
    assert_identical(second, plain)
    # the duplicated prompt with another seed is another video
    assert not np.array_equal(second.frames["0"], second.frames["3"])


def test_no_guidance_encodes_no_negative_prompt(tiny_model) -> None:  # type: ignore[no-untyped-def]
    cache = TextEmbeddingCache()
    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length, cache)
    batch = [("a", params("a fox", seed=1, steps=2, guidance_scale=1.0))]
    outcome = runner.run(batch)
    assert cache.misses == 1 and len(cache) == 1
    plain = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length).run(batch)
    assert_identical(outcome, plain)


def test_cancelled_row_leaves_batch_mates_identical(tiny_model) -> None:  # type: ignore[no-untyped-def]
    def run(runner: PipelineRunner) -> BatchOutcome:
        steps_seen: list[int] = []
        return runner.run(
            [(str(i), params(p, seed=100 + i, steps=6)) for i, p in enumerate(PROMPTS[:3])],
            on_step=lambda ids, step, total: steps_seen.append(step),
            should_stop=lambda job_id: job_id == "1" and steps_seen[-1] >= 2,
        )

    cache = TextEmbeddingCache()
    cached = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length, cache)
    run(cached)  # fills the cache
    hit_run = run(cached)
    assert cache.hits == 4 and hit_run.stopped_at == {"1": 2}
    plain = run(PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length))
    assert set(hit_run.frames) == {"0", "2"}
    assert_identical(hit_run, plain)


def test_two_expert_pipeline_uses_the_same_embeddings() -> None:
    pipe = build_a14b_layout()
    pipe.set_progress_bar_config(disable=True)
    batch = [
        (str(i), params(p, seed=i, steps=2, model="a14b-layout", width=32, height=32, num_frames=5,
                        guidance_scale=4.0, guidance_scale_2=3.0))
        for i, p in enumerate(PROMPTS[:2])
    ]
    cache = TextEmbeddingCache()
    cached = PipelineRunner(pipe, CPU, TINY_MAX_SEQUENCE_LENGTH, cache)
    first, second = cached.run(batch), cached.run(batch)
    assert (cache.misses, cache.hits) == (3, 3)
    plain = PipelineRunner(pipe, CPU, TINY_MAX_SEQUENCE_LENGTH).run(batch)
    assert_identical(first, plain)
    assert_identical(second, plain)


def test_micro_model_cached_equals_uncached() -> None:
    micro = load_model("micro", LoadOptions(device="cpu"))
    micro.pipeline.set_progress_bar_config(disable=True)
    shape = {"width": 32, "height": 32, "num_frames": 5}
    batch = [("m", params("a red circle moving right", seed=3, model="micro", **shape))]
    cache = TextEmbeddingCache()
    cached = PipelineRunner(micro.pipeline, micro.device, micro.max_sequence_length, cache)
    first, second = cached.run(batch), cached.run(batch)
    assert cache.hits == 2 and cache.misses == 2  # the prompt and the negative ""
    plain = PipelineRunner(micro.pipeline, micro.device, micro.max_sequence_length).run(batch)
    assert_identical(first, plain)
    assert_identical(second, plain)


@pytest.mark.parametrize(("entries", "mb"), [(0, 256), (1024, 0)])
def test_settings_of_zero_turn_the_cache_off(entries: int, mb: int) -> None:
    settings = Settings(text_embedding_cache_entries=entries, text_embedding_cache_mb=mb)
    assert text_embedding_cache(settings) is None


def test_server_cache_follows_settings_and_feeds_the_metric() -> None:
    metrics = Metrics()
    cache = text_embedding_cache(Settings(text_embedding_cache_entries=7, text_embedding_cache_mb=3), metrics)
    assert cache is not None and (cache.max_entries, cache.max_bytes) == (7, 3 * 2**20)
    cache.get(key("a"))
    cache.put(key("a"), embeds())
    cache.get(key("a"))
    cache.get(key("a"))
    text = metrics.render().decode()
    assert 'reelserve_text_embedding_cache_requests_total{result="miss"} 1.0' in text
    assert 'reelserve_text_embedding_cache_requests_total{result="hit"} 2.0' in text
