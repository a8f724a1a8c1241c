"""Step caches on the trained micro model: each one really skips transformer work at its calibrated
threshold (counted, not assumed), still makes a video, and survives step-count changes and rows
leaving the batch."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers.hooks import TaylorSeerCacheConfig

from reelserve.accel.options import AccelerationOptions
from reelserve.accel.step_cache import CALIBRATED_THRESHOLDS, WAN_TAYLORSEER_MODULES, SkipCounter
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadedModel, LoadOptions, load_model
from reelserve.schemas import GenerationParams

PROMPT = ["a red ball bouncing on the floor"]
KINDS = ("fbcache", "magcache", "taylorseer", "pab")


def cached(kind: str) -> LoadedModel:
    return load_model("micro", LoadOptions(device="cpu", accelerations=AccelerationOptions(step_cache=kind)))


def counter(model: LoadedModel) -> SkipCounter:
    assert model.accelerated is not None and model.accelerated.skips is not None
    model.accelerated.skips.reset()
    return model.accelerated.skips


def default_video(model: LoadedModel, steps: int | None = None) -> np.ndarray:
    limits = model.limits
    return model.generate(
        PROMPT, limits.default_width, limits.default_height, limits.default_frames,
        steps or limits.default_steps, seeds=[7],
    )


@pytest.fixture(scope="module")
def uncached(micro_model: LoadedModel) -> np.ndarray:
    return default_video(micro_model)


@pytest.mark.parametrize("kind", KINDS)
def test_each_cache_skips_work_at_its_calibrated_threshold(
    kind: str, uncached: np.ndarray, record_property: pytest.RecordProperty
) -> None:
    model = cached(kind)
    assert model.accelerated is not None
    assert model.accelerated.describe() == [f"step_cache={kind}:{CALIBRATED_THRESHOLDS['micro'][kind]:g}"]
    skips = counter(model)
    video = default_video(model)
    record_property("skipped_fraction", round(skips.skipped_fraction, 3))
    print(f"{kind}: skipped {skips.skipped_passes:g} of {skips.passes} passes ({skips.skipped_fraction:.0%})")
    assert skips.passes == 2 * model.limits.default_steps  # cond and uncond, every step
    assert skips.skipped_passes >= 1
    # Not a no-op: reused work changes the floats. Still a video: finite, in [0, 1], same shape.
    assert video.shape == uncached.shape
    assert np.isfinite(video).all() and video.min() >= 0.0 and video.max() <= 1.0
    assert np.abs(video - uncached).max() > 1e-3


def test_diffusers_default_taylorseer_patterns_match_nothing_in_wan() -> None:
    """Why WAN_TAYLORSEER_MODULES exists: the defaults hook no module of a Wan transformer, so the
    cache would run and skip nothing. The same counter sees skips once the patterns name Wan's modules."""
    model = load_model("micro", LoadOptions(device="cpu"))
    transformer = model.pipeline.transformer
    transformer.enable_cache(TaylorSeerCacheConfig())
    skips = counter(model)
    default_video(model)
    assert skips.passes > 0 and skips.computed == skips.expected
    assert skips.skipped_passes == 0

    transformer.disable_cache()
    transformer.enable_cache(TaylorSeerCacheConfig(cache_identifiers=list(WAN_TAYLORSEER_MODULES)))
    skips.reset()
    default_video(model)
    assert skips.skipped_passes >= 1


def test_magcache_is_refitted_when_the_step_count_changes() -> None:
    """10 steps, then 20: the second call is what a model that only ever ran 20 steps makes, so the
    hooks were re-fitted (retention, interpolated ratios, end-of-run reset) and not left at 10."""
    model = cached("magcache")
    skips = counter(model)
    ten = default_video(model, steps=10)
    assert skips.passes == 20 and skips.skipped_passes >= 1
    assert np.isfinite(ten).all()
    skips.reset()
    twenty = default_video(model, steps=20)
    assert skips.passes == 40 and skips.skipped_passes >= 1
    skipped_at_twenty = skips.skipped_passes

    fresh = cached("magcache")
    fresh_skips = counter(fresh)
    assert np.array_equal(default_video(fresh, steps=20), twenty)
    assert fresh_skips.skipped_passes == skipped_at_twenty


def params(prompt: str, seed: int, frames: int = 17) -> GenerationParams:
    return GenerationParams(
        model="micro", prompt=prompt, width=64, height=64, num_frames=frames, fps=8,
        num_inference_steps=25, guidance_scale=5.0, seed=seed,
    )


BATCH_PROMPTS = ["a red ball bouncing", "a blue square moving left", "a green circle growing"]


def test_fbcache_survives_a_row_leaving_mid_call() -> None:
    """Cached residuals are for the batch's old rows; the runner resets them when one leaves, so the
    next step neither crashes on the shape change nor reuses another row's work."""
    model = cached("fbcache")
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    skips = counter(model)
    steps_seen: list[int] = []
    outcome = runner.run(
        [(str(i), params(p, seed=100 + i)) for i, p in enumerate(BATCH_PROMPTS)],
        on_step=lambda ids, step, total: steps_seen.append(step),
        should_stop=lambda job_id: job_id == "1" and steps_seen[-1] >= 10,
    )
    assert outcome.stopped_at == {"1": 10}
    assert set(outcome.frames) == {"0", "2"}
    for video in outcome.frames.values():
        assert video.shape == (17, 64, 64, 3)
        assert np.isfinite(video).all() and video.min() >= 0.0 and video.max() <= 1.0
    assert skips.skipped_passes >= 1  # the cache kept working around the drop


# First-Block Cache is left out on purpose: it decides to skip from the whole batch's first-block
# residual, so a row's video depends on its batch-mates (measured: up to 0.5 apart on micro).
@pytest.mark.parametrize("kind", ["magcache", "taylorseer", "pab"])
def test_schedule_driven_caches_keep_rows_independent_of_their_batch(kind: str) -> None:
    """These skip on a fixed schedule (calibrated ratios, step intervals, timestep ranges), so a
    batched row is its solo video: batching still cannot change what the result cache stores."""
    model = cached(kind)
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated)
    rows = [(str(i), params(p, seed=100 + i, frames=9)) for i, p in enumerate(BATCH_PROMPTS[:2])]
    batched = runner.run(rows).frames
    for row in rows:
        solo = runner.run([row]).frames[row[0]]
        assert np.abs(batched[row[0]] - solo).max() <= 1e-4
