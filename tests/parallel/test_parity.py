"""A parallel group (gloo, one process per rank, rank 0 this one) against one process, on the same seeds:
each layout's videos equal the single-process ones within float tolerance, for the tiny, micro and
toy A14B layouts, with guided and unguided rows, a LoRA adapter (micro), a row that joins mid-run at
another step, and a decode of several rows shared among the ranks."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

from parallel_builds import OUTLINE_SHA256, build
from reelserve.accel.compile import is_compiled
from reelserve.engine.denoise_loop import Boundary, denoise
from reelserve.engine.runner import PipelineRunner
from reelserve.models.family import Row
from reelserve.models.wan_family import WanFamily
from reelserve.parallel.family import ParallelWanFamily
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.ranks import ParallelRanks
from reelserve.schemas import GenerationParams
from reelserve.schemas.inputs import LoraRef

# (max sequence length, width, height): odd token counts, so the sequence splits unevenly.
SHAPES = {"tiny": (16, 48, 48), "a14b": (16, 48, 48), "micro": (32, 96, 64)}
TWO_RANKS = [(model, layout) for model in SHAPES for layout in ("cfg=2", "ulysses=2", "ring=2")]
FOUR_RANKS = [(model, "cfg=2,ulysses=2") for model in SHAPES] + [("tiny", "ring=4"), ("a14b", "ulysses=2,ring=2")]
TOLERANCE = 1e-4


def rows(model: str) -> list[tuple[str, GenerationParams]]:
    _, width, height = SHAPES[model]
    outline = (LoraRef(name="outline", sha256=OUTLINE_SHA256, scale=1.0),) if model == "micro" else ()

    def params(seed: int, prompt: str, guidance: float, loras: tuple[LoraRef, ...] = ()) -> GenerationParams:
        return GenerationParams(model=model, fps=8, prompt=prompt, negative_prompt="", width=width, height=height,
                                num_frames=9, num_inference_steps=4, guidance_scale=guidance, seed=seed,
                                guidance_scale_2=guidance if guidance > 1 else None, loras=loras)

    return [("a", params(3, "a red circle moving right", 5.0)),
            ("b", params(11, "a blue square moving up", 3.0, outline)),
            ("c", params(7, "a green triangle", 1.0)),
            ("d", params(9, "a red square moving down", 1.0, outline)),
            ("joiner", params(5, "a yellow circle moving left", 5.0))]


def run(family: WanFamily, batch: list[tuple[str, GenerationParams]]) -> dict[str, np.ndarray]:
    """The rows from step 0 but the last, which joins after the first step, so it runs at another step."""
    waiting = [batch[-1]]

    def admit(live: list[Row]) -> list[Row]:
        joining = waiting[:]
        waiting.clear()
        return family.prepare_rows(joining) if joining else []

    with torch.inference_mode():
        frames, stopped = denoise(family, family.prepare_rows(batch[:-1]), boundary=Boundary(admit=admit),
                                  mixed_steps=True)
    assert stopped == {}
    return frames


def count_calls(pipeline: Any) -> list[int]:
    """Transformer evaluations this process makes (both experts)."""
    calls = [0]
    for transformer in (pipeline.transformer, getattr(pipeline, "transformer_2", None)):
        if transformer is not None:
            transformer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def check_layout(model: str, text: str, served: str | None = None) -> None:
    """``served``: the build the group runs (default ``model``), against ``model`` in one process."""
    max_len, _, _ = SHAPES[model]
    batch = rows(model)
    pipeline, bank, _ = build(model, 0)
    alone = WanFamily(pipeline, max_len, adapters=bank)
    single_calls = count_calls(pipeline)
    reference = run(alone, batch)

    pipeline, bank, _ = build(served or model, 0)  # fresh: the group installs its split in rank 0's transformers
    layout = ParallelLayout.parse(text)
    if served == "tiny-compiled":
        assert is_compiled(pipeline.transformer)
    ranks = ParallelRanks(GroupSpec(layout, functools.partial(build, served or model), threads=1), pipeline, bank)
    ranks.start()
    try:
        parallel_calls = count_calls(pipeline)
        frames = run(ParallelWanFamily(pipeline, max_len, ranks, adapters=bank), batch)
        shards = ranks.state.shards
    finally:
        ranks.close()
    assert set(frames) == set(reference)
    for key, clip in reference.items():
        assert np.abs(frames[key] - clip).max() <= TOLERANCE, (model, text, key)
    if layout.cfg == 2:  # rank 0 ran one branch of each guided evaluation, and half the unguided rows
        assert parallel_calls[0] < single_calls[0], (parallel_calls, single_calls)
    else:
        assert parallel_calls[0] == single_calls[0]
    if layout.sequence > 1:  # rank 0 held its share of the tokens, not all of them
        assert shards.length > 0 and shards.sizes()[shards.index] < shards.length


@pytest.mark.parametrize(("model", "layout"), TWO_RANKS)
def test_two_ranks_equal_one_process(model: str, layout: str) -> None:
    check_layout(model, layout)


@pytest.mark.parametrize(("model", "layout"), FOUR_RANKS)
def test_four_ranks_equal_one_process(model: str, layout: str) -> None:
    check_layout(model, layout)


def test_the_adapter_changes_the_parallel_output() -> None:
    """The LoRA row's equality above means something: the adapter moves that row's video."""
    max_len, _, _ = SHAPES["micro"]
    batch = rows("micro")
    plain = [(key, params.model_copy(update={"loras": ()})) for key, params in batch]
    pipeline, bank, _ = build("micro", 0)
    family = WanFamily(pipeline, max_len, adapters=bank)
    with_adapter, without = run(family, batch), run(family, plain)
    assert np.abs(with_adapter["b"] - without["b"]).max() > 0.05
    assert np.abs(with_adapter["a"] - without["a"]).max() <= TOLERANCE


def test_compiled_blocks_run_split() -> None:
    """``--compile`` on a parallel worker: the blocks compile with a graph break around the exchange."""
    check_layout("tiny", "ulysses=2", served="tiny-compiled")


@pytest.mark.parametrize(("cache", "layout"), [("tiny-fbcache", "cfg=2"), ("tiny-fbcache", "ulysses=2"),
                                               ("tiny-taylorseer", "ring=2")])
def test_a_step_cache_runs_split(cache: str, layout: str) -> None:
    """A step cache on cfg=2: each rank caches its own branch (its own ``cache_context``), primed per batch
    on every rank as on rank 0. On a sequence split every rank skips what the whole sequence says (First-
    Block Cache's change summed over the ranks' shares; TaylorSeer by step count). Either way two batches
    in a row equal one process's, skips and all."""
    batch = [(key, params.model_copy(update={"guidance_scale": 5.0, "guidance_scale_2": 5.0}))
             for key, params in rows("tiny")[:3]]  # one schedule: a step cache's batch is one
    outputs = []
    for parallel in (False, True):
        pipeline, _, accelerated = build(cache, 0)
        ranks = None
        if parallel:
            ranks = ParallelRanks(GroupSpec(ParallelLayout.parse(layout), functools.partial(build, cache), threads=1),
                                  pipeline, None)
            ranks.start()
            accelerated.on_prime = ranks.prime
            ranks.state.agree_on_skips(accelerated)
        runner = PipelineRunner(pipeline, torch.device("cpu"), SHAPES["tiny"][0], accelerated=accelerated, ranks=ranks)
        try:
            first, second = runner.run(batch), runner.run(batch[:2])
        finally:
            if ranks is not None:
                ranks.close()
        outputs.append((first.frames, second.frames, accelerated.skips.skipped_fraction))
    (alone_first, alone_second, alone_skips), (split_first, split_second, split_skips) = outputs
    assert alone_skips > 0 and split_skips == alone_skips  # the cache skipped the same blocks in both
    for alone, split in ((alone_first, split_first), (alone_second, split_second)):
        assert set(alone) == set(split)
        for key in alone:
            assert np.abs(alone[key] - split[key]).max() <= TOLERANCE, key
