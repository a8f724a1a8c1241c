"""The workload description: parsing the CLI spellings, validation, rate profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reelserve.planning.workload import RequestShape, Workload, parse_mix, parse_tier_mix


def test_parse_mix() -> None:
    shapes = parse_mix("64x64x17x25:0.7, 128x96x33x10:0.3,32x32x9x4", guidance=1.0, model="tiny")
    assert [(s.width, s.height, s.frames, s.steps, s.weight) for s in shapes] == [
        (64, 64, 17, 25, 0.7),
        (128, 96, 33, 10, 0.3),
        (32, 32, 9, 4, 1.0),
    ]
    assert all(s.guidance == 1.0 and s.model == "tiny" for s in shapes)
    assert shapes[1].label() == "128x96x33x10"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("64x64x17", "WxHxFRAMESxSTEPS"),
        ("", "empty"),
        ("64x64x17x25:-1", "greater than 0"),
        ("0x64x17x25", "greater"),
    ],
)
def test_parse_mix_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_parse_tier_mix() -> None:
    assert parse_tier_mix("realtime:0.2,standard:0.8") == {"realtime": 0.2, "standard": 0.8}
    assert parse_tier_mix("batch") == {"batch": 1.0}
    with pytest.raises(ValueError, match="NAME:weight"):
        parse_tier_mix("realtime:lots")


def test_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown tiers"):
        Workload.checked({"tier_mix": {"gold": 1}})
    with pytest.raises(ValueError, match="needs spike_rate_per_min, spike_at_s, spike_length_s"):
        Workload.checked({"profile": "spike"})
    with pytest.raises(ValueError, match=r"server\.max_batch_size"):
        Workload.checked({"server": {"max_batch_size": 0}})
    with pytest.raises(ValueError, match="deadlines"):
        Workload.checked({"deadlines": {"gold": 5}})


def test_rate_profiles() -> None:
    step = Workload(profile="step", rate_per_min=60, step_rate_per_min=120, step_at_s=10)
    assert (step.rate_at(9.9), step.rate_at(10), step.rate_changes()) == (1.0, 2.0, [10])
    spike = Workload(profile="spike", rate_per_min=60, spike_rate_per_min=600, spike_at_s=5, spike_length_s=2)
    assert [spike.rate_at(t) for t in (4, 5, 6.9, 7)] == [1.0, 10.0, 10.0, 1.0]
    assert Workload().rate_changes() == []


def test_deadlines_default_to_the_tier() -> None:
    w = Workload(deadlines={"realtime": 30})
    assert w.deadline_s("realtime") == 30 and w.deadline_s("standard") == 900


def test_params_of_a_shape() -> None:
    w = Workload(model="micro")
    params = w.params(RequestShape(width=96, height=64, frames=9, steps=4, guidance=1.0))
    assert (params.model, params.width, params.height, params.num_frames, params.num_inference_steps) == (
        "micro",
        96,
        64,
        9,
        4,
    )
    assert w.params(RequestShape(model="tiny")).model == "tiny"


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(Workload(rate_per_min=12).model_dump(mode="json")))
    assert Workload.from_file(path).rate_per_min == 12
    path.write_text("{")
    with pytest.raises(ValueError, match="w.json"):
        Workload.from_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        Workload.from_file(tmp_path / "absent.json")
