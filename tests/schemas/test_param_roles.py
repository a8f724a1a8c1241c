"""Each generation parameter declares its roles once; the batch key and the cache signature are
derived from the declarations, so a new field cannot be forgotten by either."""

from __future__ import annotations

import pytest

from reelserve.cache.key import output_signature
from reelserve.schemas import GenerationParams, Role
from reelserve.schemas.inputs import LoraRef

BASE = GenerationParams(model="micro", prompt="a red circle moving right", negative_prompt="", width=64, height=64,
                        num_frames=17, fps=8, num_inference_steps=25, guidance_scale=5.0, seed=1)
# A value for each field that differs from BASE's.
OTHER = {"model": "tiny", "prompt": "a blue square", "negative_prompt": "blurry", "width": 128, "height": 32,
         "num_frames": 33, "fps": 16, "num_inference_steps": 10, "guidance_scale": 3.0, "guidance_scale_2": 2.0,
         "seed": 2, "preview_every": 5, "input_reference": "sha256:ab", "input_fit": "crop", "source": "sha256:cd",
         "strength": 0.5, "loras": (LoraRef(name="style", sha256="sha256:ef", scale=0.8),), "flow_shift": 3.0}
# Keyed only when given, so that requests without them key as before they existed.
INPUTS = ("input_reference", "input_fit", "source", "strength", "loras", "flow_shift")


def test_every_field_declares_whether_it_shapes_the_call_or_the_row() -> None:
    assert set(GenerationParams.model_fields) == set(OTHER), "a new field needs a value here and its roles"
    for name in GenerationParams.model_fields:
        roles = GenerationParams.roles(name)
        assert (Role.BATCH in roles) != (Role.ROW in roles), f"{name}: declare exactly one of BATCH and ROW"


@pytest.mark.parametrize("name", list(OTHER))
def test_the_batch_key_changes_with_exactly_the_batch_fields(name: str) -> None:
    changed = BASE.model_copy(update={name: OTHER[name]})
    assert (changed.batch_key() != BASE.batch_key()) == (Role.BATCH in GenerationParams.roles(name))


@pytest.mark.parametrize("name", list(OTHER))
def test_the_shape_key_changes_with_exactly_the_shape_fields_and_matches_its_batch_keys(name: str) -> None:
    changed = BASE.model_copy(update={name: OTHER[name]})
    shaped = Role.SHAPE in GenerationParams.roles(name)
    assert (changed.shape_key() != BASE.shape_key()) == shaped
    assert not shaped or Role.BATCH in GenerationParams.roles(name)
    assert BASE.shape_key().matches(changed.batch_key()) == (not shaped)
    assert changed.shape_key().matches(changed.batch_key())


def test_every_pixel_field_is_in_the_cache_signature() -> None:
    with_inputs = BASE.model_copy(update={name: OTHER[name] for name in INPUTS})
    signature = output_signature(with_inputs, "v1")
    pixels = set(GenerationParams.fields_with(Role.PIXELS)) - {"prompt"}  # the prompt is keyed apart
    assert pixels and pixels <= set(signature)


def test_a_text_only_request_keys_as_before_inputs_existed() -> None:
    assert not set(INPUTS) & set(output_signature(BASE, "v1"))  # cached videos of earlier versions still hit


def test_the_video_object_shows_exactly_the_public_fields() -> None:
    from reelserve.schemas.jobs import Job

    video = Job(params=BASE).to_video_object()
    for name in GenerationParams.model_fields:
        assert (name in video) == (Role.PUBLIC in GenerationParams.roles(name)), name
        if name in video:
            assert video[name] == BASE.model_dump(mode="json")[name]


@pytest.mark.parametrize("two_experts", [False, True])
def test_the_model_object_describes_every_public_field_a_request_can_set(two_experts: bool) -> None:
    from reelserve.models.specs import get_spec
    from reelserve.schemas.model_info import model_object

    limits = get_spec("micro").limits.model_copy(update={"two_experts": two_experts})
    parameters = model_object("micro", limits, [], ["standard"], "standard")["parameters"]
    public = set(GenerationParams.fields_with(Role.PUBLIC)) - {"model"}  # the model is the object itself
    if not two_experts:
        public.discard("guidance_scale_2")  # offered only where there is a second expert
    assert public <= set(parameters)


def test_previews_change_no_pixel_so_no_cache_entry() -> None:
    with_previews = BASE.model_copy(update={"preview_every": 5})
    assert output_signature(with_previews, "v1") == output_signature(BASE, "v1")
