from pathlib import Path

import pytest
import torch

from reelserve.models import LoadOptions, get_spec, list_specs, load_model
from reelserve.models.wan import A14B_HUB_ID, I2V_A14B_HUB_ID, LAYOUTS, TI2V_5B_HUB_ID
from reelserve.schemas.errors import ErrorCode, ReelserveError
from reelserve.schemas.requests import VideoCreateRequest, resolve_request


def test_lists_exactly_the_five_models() -> None:
    assert [spec.name for spec in list_specs()] == [
        "tiny", "micro", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"]


def test_unknown_model_names_the_available_ones() -> None:
    with pytest.raises(ReelserveError) as caught:
        get_spec("sora")
    assert caught.value.code == ErrorCode.unknown_model
    assert caught.value.param == "model"
    assert caught.value.message == ("unknown model 'sora'; available: tiny, micro, wan2.2-ti2v-5b, wan2.2-t2v-a14b, "
                                    "wan2.2-i2v-a14b")


def test_unknown_model_rejected_by_load_model() -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("nope", LoadOptions(device="cpu"))
    assert caught.value.code == ErrorCode.unknown_model


def test_limits_as_documented() -> None:
    tiny, ti2v, a14b = (get_spec(name).limits for name in ("tiny", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b"))
    assert tiny.model_dump(include={"spatial_multiple", "max_width", "max_frames", "default_frames"}) == {
        "spatial_multiple": 16,
        "max_width": 256,
        "max_frames": 33,
        "default_frames": 9,
    }
    assert (ti2v.spatial_multiple, ti2v.max_frames, ti2v.default_fps) == (32, 121, 24)
    assert (ti2v.default_width, ti2v.default_height, ti2v.default_steps) == (1280, 704, 50)
    assert (a14b.spatial_multiple, a14b.max_frames, a14b.default_fps) == (16, 81, 16)
    assert (a14b.default_width, a14b.default_height, a14b.default_steps) == (1280, 720, 40)
    assert (a14b.default_guidance, a14b.two_experts) == (4.0, True)
    assert not tiny.two_experts and not ti2v.two_experts
    i2v = get_spec("wan2.2-i2v-a14b").limits
    assert (i2v.spatial_multiple, i2v.max_frames, i2v.default_fps) == (16, 81, 16)
    assert (i2v.default_width, i2v.default_height, i2v.default_steps) == (1280, 720, 40)
    assert (i2v.default_guidance, i2v.two_experts) == (3.5, True)
    assert (i2v.image_input, i2v.video_input) == ("required", False)


def test_sources() -> None:
    assert get_spec("tiny").default_source is None
    assert get_spec("wan2.2-ti2v-5b").default_source == TI2V_5B_HUB_ID
    assert get_spec("wan2.2-t2v-a14b").default_source == A14B_HUB_ID
    assert get_spec("wan2.2-i2v-a14b").default_source == I2V_A14B_HUB_ID == "Wan-AI/Wan2.2-I2V-A14B-Diffusers"


def test_limits_agree_with_checked_layouts() -> None:
    assert get_spec("wan2.2-ti2v-5b").limits.spatial_multiple == LAYOUTS["ti2v-5b"].spatial_multiple
    assert get_spec("wan2.2-t2v-a14b").limits.spatial_multiple == LAYOUTS["a14b"].spatial_multiple
    assert get_spec("wan2.2-t2v-a14b").limits.two_experts == LAYOUTS["a14b"].two_experts
    assert get_spec("wan2.2-i2v-a14b").limits.spatial_multiple == LAYOUTS["i2v-a14b"].spatial_multiple
    assert get_spec("wan2.2-i2v-a14b").limits.two_experts == LAYOUTS["i2v-a14b"].two_experts


@pytest.mark.parametrize("name", ["tiny", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"])
def test_defaults_pass_their_own_limits(name: str) -> None:
    limits = get_spec(name).limits
    params = resolve_request(VideoCreateRequest(prompt="a cat"), name, limits)
    assert (params.width, params.height) == (limits.default_width, limits.default_height)
    assert params.num_frames == limits.default_frames


def test_load_tiny() -> None:
    model = load_model("tiny", LoadOptions(device="cpu"))
    assert model.name == "tiny"
    assert model.device == torch.device("cpu")
    assert model.dtype == torch.float32
    assert model.max_sequence_length == 32
    assert model.limits == get_spec("tiny").limits


def test_tiny_rejects_a_path(tmp_path: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("tiny", LoadOptions(device="cpu", path=str(tmp_path)))
    assert caught.value.param == "path"


def test_warm_up_takes_time_and_leaves_rng_alone() -> None:
    model = load_model("tiny", LoadOptions(device="cpu"))
    before = torch.random.get_rng_state()
    seconds = model.warm_up(runs=2)
    assert seconds > 0
    assert torch.equal(before, torch.random.get_rng_state())


def test_warm_up_two_experts(a14b_dir: Path) -> None:
    model = load_model("wan2.2-t2v-a14b", LoadOptions(device="cpu", path=str(a14b_dir)))
    assert model.warm_up() > 0
