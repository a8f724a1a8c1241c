"""The cost model learns a synthetic ground truth: seen shapes closely, unseen ones roughly, drift, and
stays monotone and positive throughout."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from reelserve.engine.cost_model import CallTiming, CostModel, CostPrior
from reelserve.schemas import GenerationParams

SEEN = [((64, 64, 17), 1), ((64, 64, 17), 2), ((128, 128, 17), 1), ((64, 64, 33), 4), ((96, 96, 17), 2)]


def params(
    width: int = 64,
    height: int = 64,
    frames: int = 17,
    steps: int = 25,
    guidance: float = 5.0,
    model: str = "tiny",
) -> GenerationParams:
    return GenerationParams(
        model=model,
        prompt="a fox",
        width=width,
        height=height,
        num_frames=frames,
        fps=8,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=0,
    )


def true_parts(p: GenerationParams, batch: int, slowdown: float = 1.0) -> tuple[float, float]:
    """Ground truth: (seconds per step, overhead seconds)."""
    volume = p.width * p.height * p.num_frames
    work = batch * volume * (2 if p.guidance_scale > 1 else 1)
    return slowdown * (0.01 + 3e-7 * work), slowdown * (0.15 + 0.01 * batch + 2e-6 * batch * volume)


def true_total(p: GenerationParams, batch: int, slowdown: float = 1.0) -> float:
    step_s, overhead_s = true_parts(p, batch, slowdown)
    return p.num_inference_steps * step_s + overhead_s


def feed(
    model: CostModel, rng: random.Random, calls: int, slowdown: float = 1.0, noise: float = 0.03
) -> None:
    for i in range(calls):
        (width, height, frames), batch = SEEN[i % len(SEEN)]
        p = params(width, height, frames)
        step_s, overhead_s = true_parts(p, batch, slowdown)
        step_s *= 1 + rng.gauss(0, noise)
        overhead_s *= 1 + rng.gauss(0, noise)
        total = p.num_inference_steps * step_s + overhead_s
        model.observe(
            p,
            CallTiming(
                batch_size=batch,
                steps=p.num_inference_steps,
                step_s=step_s,
                overhead_s=overhead_s,
                total_s=total,
            ),
        )


def relative_error(model: CostModel, p: GenerationParams, batch: int, slowdown: float = 1.0) -> float:
    return abs(model.predict(p, batch) / true_total(p, batch, slowdown) - 1)


@pytest.fixture
def learned() -> CostModel:
    model = CostModel()
    feed(model, random.Random(7), calls=60)
    return model


def test_prior_is_used_before_any_data() -> None:
    model = CostModel()
    p = params()
    assert model.observations() == 0
    assert model.predict_step(p, 1) == pytest.approx(0.04, rel=0.05)  # tiny model on CPU, 64x64x17 CFG
    assert model.predict(p, 1) == pytest.approx(25 * model.predict_step(p, 1) + 0.2, rel=0.05)
    slower = CostModel(CostPrior(step_fixed_s=1.0))
    assert slower.predict_step(p, 1) > 1.0


def test_seen_shapes_within_5_percent(learned: CostModel) -> None:
    assert learned.observations() == 60
    assert learned.observations("tiny") == 60 and learned.observations("other") == 0
    for (width, height, frames), batch in SEEN:
        assert relative_error(learned, params(width, height, frames), batch) < 0.05, (width, frames, batch)


@pytest.mark.parametrize(
    ("shape", "batch"),
    [((64, 64, 17), 4), ((128, 128, 33), 2), ((160, 96, 17), 3), ((256, 256, 33), 4), ((64, 64, 9), 1)],
)
def test_unseen_shapes_and_batch_sizes_within_20_percent(
    learned: CostModel, shape: tuple, batch: int
) -> None:
    assert relative_error(learned, params(*shape), batch) < 0.20


def test_without_cfg_costs_less(learned: CostModel) -> None:
    assert learned.predict(params(guidance=1.0), 2) < learned.predict(params(), 2)
    assert relative_error(learned, params(guidance=1.0), 2) < 0.20


def test_forgetting_tracks_a_2x_slowdown(learned: CostModel) -> None:
    feed(learned, random.Random(8), calls=60, slowdown=2.0)
    for (width, height, frames), batch in SEEN:
        assert relative_error(learned, params(width, height, frames), batch, slowdown=2.0) < 0.10
    assert relative_error(learned, params(128, 128, 33), 2, slowdown=2.0) < 0.20


def test_one_stall_moves_predictions_little_but_a_real_change_is_learned(learned: CostModel) -> None:
    before = {(shape, batch): learned.predict(params(*shape), batch) for shape, batch in SEEN}
    stalled = params(128, 128, 17)
    learned.observe(stalled, CallTiming(batch_size=1, steps=25, step_s=5.0, overhead_s=20.0, total_s=145.0))
    assert learned.predict(stalled, 1) < 1.4 * before[((128, 128, 17), 1)]  # its shape's memory moves
    for shape, batch in SEEN:
        if shape != (128, 128, 17):  # the model-wide level ignores one call
            assert learned.predict(params(*shape), batch) == pytest.approx(before[(shape, batch)], rel=0.05)
    feed(learned, random.Random(9), calls=40, slowdown=10.0)  # say, the file moved to a slower machine
    for shape, batch in SEEN:
        assert relative_error(learned, params(*shape), batch, slowdown=10.0) < 0.15


def test_one_shape_scales_the_prior_instead_of_extrapolating_wildly() -> None:
    model = CostModel()
    p = params()
    for _ in range(5):  # a GPU 100x faster than the prior
        model.observe(p, CallTiming(batch_size=1, steps=25, step_s=0.0004, overhead_s=0.002, total_s=0.012))
    assert model.predict(p, 1) == pytest.approx(0.012, rel=0.01)
    ratio = model.predict_step(p, 4) / model.predict_step(p, 1)
    prior = CostModel()
    assert ratio == pytest.approx(prior.predict_step(p, 4) / prior.predict_step(p, 1), rel=0.01)


def test_unmeasured_steps_split_the_total_like_the_model() -> None:
    model = CostModel()
    p = params()
    for _ in range(10):
        model.observe(p, CallTiming(batch_size=1, steps=25, step_s=None, overhead_s=0.0, total_s=3.6))
    assert model.predict(p, 1) == pytest.approx(3.6, rel=0.02)


def test_calls_that_measured_nothing_are_ignored() -> None:
    model = CostModel()
    model.observe(params(), CallTiming(batch_size=1, steps=0, step_s=None, overhead_s=0.0, total_s=0.0))
    assert model.observations() == 0


def inconsistent_model() -> CostModel:
    """A shape measured at half what the fit implies, next to unremembered neighbours."""
    model = CostModel()
    for _ in range(40):
        for shape, batch, factor in (
            ((64, 64, 17), 1, 1.0),
            ((96, 96, 17), 2, 0.5),
            ((128, 128, 17), 1, 1.0),
        ):
            p = params(*shape)
            step_s, overhead_s = (x * factor for x in true_parts(p, batch))
            model.observe(p, CallTiming(batch, 25, step_s, overhead_s, 25 * step_s + overhead_s))
    return model


def test_memory_corrects_a_shape_the_fit_gets_wrong() -> None:
    model = inconsistent_model()
    fast = params(96, 96, 17)
    assert model.predict(fast, 2) == pytest.approx(0.5 * true_total(fast, 2), rel=0.05)


@pytest.mark.parametrize("model", [CostModel(), inconsistent_model()], ids=["prior", "inconsistent"])
def test_predictions_are_positive_and_monotone(model: CostModel) -> None:
    sizes, frame_counts, steps, batches = (64, 80, 96, 112), (9, 17, 33), (4, 25), (1, 2, 3, 4, 8)
    for width, height, frames, step, batch in itertools.product(sizes, sizes, frame_counts, steps, batches):
        p = params(width, height, frames, step)
        here = model.predict(p, batch)
        assert here > 0
        for bigger in (
            params(width, height, frames, step * 2),
            params(width + 16, height, frames, step),
            params(width, height + 16, frames, step),
            params(width, height, frames + 8, step),
        ):
            assert model.predict(bigger, batch) >= here
        assert model.predict(p, batch + 1) >= here
        assert model.predict_step(p, batch + 1) >= model.predict_step(p, batch)
        assert model.predict(params(width, height, frames, step, guidance=1.0), batch) <= here


def test_save_and_load_round_trip(learned: CostModel, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cost_model.json"
    learned.save(path)
    loaded = CostModel.load(path)
    assert loaded.observations() == learned.observations()
    assert loaded.observations("tiny") == learned.observations("tiny")
    for shape, batch in [*SEEN, ((128, 128, 33), 3)]:
        assert loaded.predict(params(*shape), batch) == pytest.approx(learned.predict(params(*shape), batch))
    assert [p.name for p in path.parent.iterdir()] == ["cost_model.json"]  # no temporary left behind
    assert CostModel.from_dict(json.loads(path.read_text())).to_dict() == loaded.to_dict()


def test_missing_and_corrupt_files_raise_clear_errors(learned: CostModel, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no cost model file"):
        CostModel.load(tmp_path / "absent.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": "reelserve.cost_mo')
    with pytest.raises(ValueError, match="bad JSON"):
        CostModel.load(bad_json)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a valid cost model"):
        CostModel.load(wrong)
    truncated = learned.to_dict()
    truncated["models"]["tiny"]["step"]["gram"] = [[1.0]]
    with pytest.raises(ValueError, match="3 terms"):
        CostModel.from_dict(truncated)
