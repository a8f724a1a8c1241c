"""What a weights directory's sampler can do, read from its ``model_index.json`` without loading it."""

from __future__ import annotations

import json
from pathlib import Path

from reelserve.models.micro import MICRO_WEIGHTS
from reelserve.models.specs import SamplerTraits, get_spec, sampler_traits, weights_limits


def with_scheduler(root: Path, name: str) -> str:
    weights = root / name
    weights.mkdir()
    index = json.loads((MICRO_WEIGHTS / "model_index.json").read_text())
    (weights / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", name]}))
    return str(weights)


def test_the_class_named_in_the_index_decides(tmp_path: Path) -> None:
    assert sampler_traits(str(MICRO_WEIGHTS)) == SamplerTraits(takes_shift=True, redraws=True)  # UniPC
    assert sampler_traits(with_scheduler(tmp_path, "FlowMatchEulerDiscreteScheduler")) == SamplerTraits(False, False)
    # Classes not in the short list are looked up in diffusers.
    assert sampler_traits(with_scheduler(tmp_path, "DEISMultistepScheduler")) == SamplerTraits(True, True)
    assert sampler_traits(with_scheduler(tmp_path, "FlowMatchHeunDiscreteScheduler")) == SamplerTraits(False, False)
    # What the loader refuses anyway, and a hub id or a model built in code, keep the defaults.
    assert sampler_traits(with_scheduler(tmp_path, "NoSuchScheduler")) == SamplerTraits()
    assert sampler_traits("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == SamplerTraits() == sampler_traits(None)


def test_the_limits_refuse_what_the_sampler_cannot_do(tmp_path: Path) -> None:
    micro = get_spec("micro")
    euler = weights_limits(micro, with_scheduler(tmp_path, "FlowMatchEulerDiscreteScheduler"))
    assert (euler.flow_shift, euler.video_input) == (False, False)
    assert weights_limits(micro, None) == micro.limits
