from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from reelserve.models import LoadOptions, get_spec, load_model
from reelserve.models.tiny import build_a14b_layout, build_ti2v_5b_layout
from reelserve.models.wan import load_wan_pipeline
from reelserve.schemas.errors import ErrorCode, ReelserveError

Generate = Callable[..., np.ndarray]


def _cpu(path: Path, **extra: object) -> LoadOptions:
    return LoadOptions(device="cpu", path=str(path), **extra)  # type: ignore[arg-type]


def test_ti2v_5b_layout_loads_and_generates(ti2v_5b_dir: Path, generate: Generate) -> None:
    model = load_model("wan2.2-ti2v-5b", _cpu(ti2v_5b_dir))
    pipe = model.pipeline
    assert pipe.config.expand_timesteps is True
    assert pipe.vae.config.z_dim == 48 and pipe.vae.config.is_residual
    assert pipe.transformer_2 is None
    assert model.limits == get_spec("wan2.2-ti2v-5b").limits
    assert model.max_sequence_length == 512
    assert generate(pipe, height=32, width=32).shape == (1, 5, 32, 32, 3)
    assert generate(pipe, height=32, width=64).shape == (1, 5, 32, 64, 3)


def test_loaded_weights_match_saved_ones(ti2v_5b_dir: Path, generate: Generate) -> None:
    loaded = load_model("wan2.2-ti2v-5b", _cpu(ti2v_5b_dir)).pipeline
    original = build_ti2v_5b_layout(seed=0)
    assert np.array_equal(generate(loaded), generate(original))


def test_a14b_layout_loads_with_two_experts(a14b_dir: Path, generate: Generate) -> None:
    model = load_model("wan2.2-t2v-a14b", _cpu(a14b_dir))
    pipe = model.pipeline
    assert pipe.transformer_2 is not None
    assert pipe.config.boundary_ratio == 0.875
    assert model.limits.two_experts
    frames = generate(pipe, height=16, width=32, guidance_scale=4.0, guidance_scale_2=3.0)
    assert frames.shape == (1, 5, 16, 32, 3)


def test_a14b_guidance_scale_2_reaches_second_expert(a14b_dir: Path, generate: Generate) -> None:
    pipe = load_model("wan2.2-t2v-a14b", _cpu(a14b_dir)).pipeline
    # With 2 steps the timesteps are 999 and 750: the second is below the 875 boundary, so it
    # runs on transformer_2 with guidance_scale_2. Changing only g2 must change the video.
    first = generate(pipe, guidance_scale=4.0, guidance_scale_2=3.0)
    again = generate(pipe, guidance_scale=4.0, guidance_scale_2=3.0)
    other = generate(pipe, guidance_scale=4.0, guidance_scale_2=1.0)
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


def test_a14b_missing_boundary_ratio_defaults(tmp_path: Path) -> None:
    pipe = build_a14b_layout(seed=0)
    pipe.register_to_config(boundary_ratio=None)
    pipe.save_pretrained(tmp_path)
    loaded = load_wan_pipeline(str(tmp_path), "a14b", LoadOptions(device="cpu"))
    assert loaded.config.boundary_ratio == 0.875


def test_bfloat16_load_keeps_vae_float32(a14b_dir: Path) -> None:
    pipe = load_model("wan2.2-t2v-a14b", _cpu(a14b_dir, dtype="bfloat16")).pipeline
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer_2.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32


def test_single_transformer_dir_is_not_a14b(tiny_dir: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-t2v-a14b", _cpu(tiny_dir))
    error = caught.value
    assert error.code == ErrorCode.invalid_request
    assert error.param == "path"
    assert "Wan2.2-T2V-A14B" in error.message
    assert "transformer_2" in error.message
    assert str(tiny_dir) in error.message


def test_wan21_layout_is_not_ti2v_5b(tiny_dir: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-ti2v-5b", _cpu(tiny_dir))
    message = caught.value.message
    assert caught.value.code == ErrorCode.invalid_request
    assert "expand_timesteps" in message
    assert "z_dim is 16, expected 48" in message
    assert "spatial multiple" in message


def test_ti2v_5b_dir_is_not_a14b(ti2v_5b_dir: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-t2v-a14b", _cpu(ti2v_5b_dir))
    assert "transformer_2" in caught.value.message
    assert "z_dim is 48, expected 16" in caught.value.message


def test_nonexistent_path_named_in_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-ti2v-5b", _cpu(missing))
    assert caught.value.code == ErrorCode.invalid_parameter
    assert caught.value.param == "path"
    assert str(missing) in caught.value.message
    assert "does not exist" in caught.value.message


def test_file_path_rejected(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-t2v-a14b", _cpu(file))
    assert caught.value.param == "path"
    assert "is a file" in caught.value.message


def test_directory_without_pipeline_rejected(tmp_path: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-ti2v-5b", _cpu(tmp_path))
    assert caught.value.code == ErrorCode.invalid_parameter
    assert caught.value.param == "path"
    assert str(tmp_path) in caught.value.message
