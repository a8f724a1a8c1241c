import json
from pathlib import Path

import pytest

from reelserve.engine.cost_model import CostModel
from reelserve.engine.finish_cost import FinishCost, FinishPrior
from reelserve.schemas import GenerationParams


def params(width: int = 64, frames: int = 9, model: str = "tiny") -> GenerationParams:
    return GenerationParams(
        model=model, prompt="a fox", width=width, height=width, num_frames=frames, fps=8,
        num_inference_steps=4, guidance_scale=5.0, seed=0,
    )


def test_the_prior_grows_with_pixels_and_frames_before_any_job() -> None:
    cost = FinishCost(FinishPrior(fixed_s=0.01, per_unit_s=1e-7))
    assert cost.predict(params()) == pytest.approx(0.01 + 1e-7 * 64 * 64 * 9)
    assert cost.predict(params(width=128)) > cost.predict(params()) < cost.predict(params(frames=17))


def test_measurements_scale_the_prior_per_model_and_one_stall_does_not_take_over() -> None:
    cost = FinishCost(alpha=0.2)
    prior = cost.predict(params())
    cost.observe(params(), 3 * prior)  # the first job of a model replaces the guess
    assert cost.predict(params()) == pytest.approx(3 * prior)
    assert cost.predict(params(width=128)) / cost.predict(params()) == pytest.approx(
        FinishCost().predict(params(width=128)) / prior
    )  # the shape dependence stays the prior's
    assert cost.predict(params(model="micro")) == pytest.approx(prior)  # another model: still the prior
    cost.observe(params(), 1000 * prior)  # a stall counts as at most 5x the current scale
    assert cost.predict(params()) == pytest.approx(3 * prior * (0.8 + 0.2 * 5))
    for _ in range(60):
        cost.observe(params(), 2 * prior)
    assert cost.predict(params()) == pytest.approx(2 * prior, rel=0.01)
    cost.observe(params(), 0.0)  # nothing measured: nothing learned
    assert cost.predict(params()) == pytest.approx(2 * prior, rel=0.01)


def test_the_cost_model_file_keeps_the_finish_cost_and_reads_files_without_one(tmp_path: Path) -> None:
    model = CostModel()
    model.finish.observe(params(), 0.5)
    path = tmp_path / "cost_model.json"
    model.save(path)
    assert CostModel.load(path).finish.predict(params()) == pytest.approx(0.5)
    older = json.loads(path.read_text())
    del older["finish"]
    assert CostModel.from_dict(older).finish.predict(params()) == pytest.approx(FinishCost().predict(params()))
    older["finish"] = {"scale": {"tiny": -1}}
    with pytest.raises(ValueError, match="finish"):
        CostModel.from_dict(older)
