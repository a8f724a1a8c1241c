"""Each generation parameter declares its roles once; the batch key and the cache signature are
derived from the declarations, so a new field cannot be forgotten by either."""

from __future__ import annotations

import pytest

from reelserve.cache.key import output_signature
from reelserve.schemas import GenerationParams, Role

BASE = GenerationParams(model="micro", prompt="a red circle moving right", negative_prompt="", width=64, height=64,
                        num_frames=17, fps=8, num_inference_steps=25, guidance_scale=5.0, seed=1)
# A value for each field that differs from BASE's.
OTHER = {"model": "tiny", "prompt": "a blue square", "negative_prompt": "blurry", "width": 128, "height": 32,
         "num_frames": 33, "fps": 16, "num_inference_steps": 10, "guidance_scale": 3.0, "guidance_scale_2": 2.0,
         "seed": 2}


def test_every_field_declares_whether_it_shapes_the_call_or_the_row() -> None:
    assert set(GenerationParams.model_fields) == set(OTHER), "a new field needs a value here and its roles"
    for name in GenerationParams.model_fields:
        roles = GenerationParams.roles(name)
        assert (Role.BATCH in roles) != (Role.ROW in roles), f"{name}: declare exactly one of BATCH and ROW"


@pytest.mark.parametrize("name", list(OTHER))
def test_the_batch_key_changes_with_exactly_the_batch_fields(name: str) -> None:
    changed = BASE.model_copy(update={name: OTHER[name]})
    assert (changed.batch_key() != BASE.batch_key()) == (Role.BATCH in GenerationParams.roles(name))


def test_every_pixel_field_is_in_the_cache_signature() -> None:
    signature = output_signature(BASE, "v1")
    pixels = set(GenerationParams.fields_with(Role.PIXELS)) - {"prompt"}  # the prompt is keyed apart
    assert pixels and pixels <= set(signature)
