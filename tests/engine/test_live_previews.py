"""Live previews in the runner: a row that asks gets a preview every ``preview_every`` steps (never
at its last, where its video comes), made from its x0 estimate without the VAE; previews change no
pixel of the video; a run where no row asks never even fits the preview map."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reelserve.engine.joining import JoinQueue
from reelserve.engine.runner import PipelineRunner
from reelserve.schemas import GenerationParams


def params(seed: int, steps: int, every: int) -> GenerationParams:
    return GenerationParams(model="tiny", prompt="a red fox in snow", width=32, height=32, num_frames=9, fps=8,
                            num_inference_steps=steps, guidance_scale=5.0, seed=seed, preview_every=every)


@pytest.fixture(scope="module")
def runner(tiny_model):  # type: ignore[no-untyped-def]
    return PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)


def test_a_row_gets_a_preview_every_k_steps_and_the_video_is_unchanged(runner: PipelineRunner) -> None:
    previews: list[tuple[str, int, int, bytes]] = []
    outcome = runner.run([("asks", params(1, steps=7, every=3)), ("quiet", params(2, steps=7, every=0))],
                         on_preview=lambda *preview: previews.append(preview))
    assert [(key, step, total) for key, step, total, _ in previews] == [("asks", 3, 7), ("asks", 6, 7)]
    for *_, image in previews:
        webp = Image.open(io.BytesIO(image))
        assert webp.format == "WEBP" and webp.size == (32, 32)
    plain = runner.run([("asks", params(1, steps=7, every=0)), ("quiet", params(2, steps=7, every=0))])
    assert np.array_equal(outcome.frames["asks"], plain.frames["asks"])  # the same batch without previews


def test_a_joined_row_previews_at_its_own_steps(runner: PipelineRunner) -> None:
    joins = JoinQueue(limit=2, live=1)
    previews: list[tuple[str, int]] = []

    def on_step(keys: list[str], step: int, total: int) -> None:
        if keys == ["first"] and step == 1:
            assert joins.offer([("joiner", params(3, steps=4, every=2))])

    runner.run([("first", params(4, steps=5, every=0))], on_step, joins=joins,
               on_preview=lambda key, step, total, image: previews.append((key, step)))
    assert previews == [("joiner", 2)]  # its own step 2 of 4, whatever step the batch was at


def test_no_row_asking_fits_no_map(tiny_model) -> None:  # type: ignore[no-untyped-def]
    fresh = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    fresh.run([("quiet", params(5, steps=3, every=0))], on_preview=lambda *_: pytest.fail("no row asked"))
    assert fresh.previews._map is None
