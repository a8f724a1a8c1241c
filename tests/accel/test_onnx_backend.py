"""OnnxTransformerBackend on the real tiny model: PyTorch's outputs, one export per shape, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from reelserve.accel.onnx_backend import ForwardShape, OnnxTransformerBackend
from reelserve.models import build_tiny_pipeline
from reelserve.models.tiny import TINY_MAX_SEQUENCE_LENGTH

MODEL_KEY = "tiny-seed0"
TEXT_DIM = 32
# What the tiny pipeline feeds its transformer for one 64x64, 5-frame video: 16 latent channels,
# (5 - 1) / 4 + 1 = 2 latent frames, 64 / 8 = 8 latent pixels a side.
SHAPE = ForwardShape(batch=1, channels=16, frames=2, height=8, width=8, text_length=TINY_MAX_SEQUENCE_LENGTH)
# Float32 graphs differ from eager PyTorch only by kernel rounding: about 2e-6 here.
FORWARD_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}
# Frames are in [0, 1]; three denoising steps plus the VAE grow the difference to about 1e-6.
FRAME_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def pipe() -> Any:
    pipe = build_tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def installed(
    backend: OnnxTransformerBackend, transformer: torch.nn.Module
) -> Iterator[OnnxTransformerBackend]:
    backend.install(transformer)
    try:
        yield backend
    finally:
        backend.uninstall()


@pytest.fixture(scope="module")
def shared_cache(pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory already holding the graph for ``SHAPE``: the module's one export of it."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    with installed(OnnxTransformerBackend(cache, MODEL_KEY), pipe.transformer) as backend:
        backend.warm_up([SHAPE])
    assert backend.exports == 1
    return cache


def random_inputs(shape: ForwardShape, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(
            shape.batch, shape.channels, shape.frames, shape.height, shape.width, generator=generator
        ),
        # The pipeline passes the scheduler's integer timesteps.
        "timestep": torch.full((shape.batch,), 857, dtype=torch.int64),
        "encoder_hidden_states": torch.randn(shape.batch, shape.text_length, TEXT_DIM, generator=generator),
    }


def generate(pipe: Any) -> np.ndarray:
    return pipe(
        prompt="a red fox in the snow",
        negative_prompt="",
        height=64,
        width=64,
        num_frames=5,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
    ).frames


def test_forward_matches_pytorch(pipe: Any, shared_cache: Path) -> None:
    transformer = pipe.transformer
    inputs = random_inputs(SHAPE)
    with torch.no_grad():
        expected = transformer(**inputs, return_dict=False)[0]
        with installed(OnnxTransformerBackend(shared_cache, MODEL_KEY), transformer) as backend:
            (as_tuple,) = transformer(**inputs, return_dict=False)
            as_output = transformer(**inputs, return_dict=True)

    assert backend.sessions == 1
    assert as_tuple.dtype == expected.dtype and as_tuple.device == expected.device
    torch.testing.assert_close(as_tuple, expected, **FORWARD_TOLERANCE)
    assert isinstance(as_output, Transformer2DModelOutput)
    torch.testing.assert_close(as_output.sample, as_tuple, atol=0, rtol=0)


def test_pipeline_frames_match_pytorch(pipe: Any, shared_cache: Path) -> None:
    expected = generate(pipe)
    with installed(OnnxTransformerBackend(shared_cache, MODEL_KEY), pipe.transformer) as backend:
        frames = generate(pipe)

    # The pipeline really ran through onnxruntime, on the graph already on disk.
    assert (backend.exports, backend.sessions) == (0, 1)
    assert frames.shape == expected.shape == (1, 5, 64, 64, 3)
    assert np.abs(frames - expected).max() < FRAME_TOLERANCE


def test_uninstall_restores_pytorch_forward(pipe: Any, shared_cache: Path) -> None:
    transformer = pipe.transformer
    with installed(OnnxTransformerBackend(shared_cache, MODEL_KEY), transformer):
        assert "forward" in vars(transformer)
    assert "forward" not in vars(transformer)


def test_second_backend_reuses_the_file_and_exports_new_shapes(pipe: Any, shared_cache: Path) -> None:
    backend = OnnxTransformerBackend(shared_cache, MODEL_KEY)
    cached = backend.path_for(SHAPE, torch.float32)
    assert cached == shared_cache / MODEL_KEY / "b1-c16-f2-h8-w8-t32-float32.onnx"
    written_at = cached.stat().st_mtime_ns

    with installed(backend, pipe.transformer):
        backend.warm_up([SHAPE])
        assert (backend.exports, backend.sessions) == (0, 1)
        assert cached.stat().st_mtime_ns == written_at

        two_videos = ForwardShape(**{**vars(SHAPE), "batch": 2})
        with torch.no_grad():
            pipe.transformer(**random_inputs(two_videos), return_dict=False)
        assert (backend.exports, backend.sessions) == (1, 2)

    assert backend.path_for(two_videos, torch.float32).is_file()


def test_failed_export_leaves_no_cache_entry(pipe: Any, tmp_path: Path) -> None:
    # Per-token timesteps must number the video's 2 x 4 x 4 = 32 tokens; 5 cannot be traced.
    unexportable = ForwardShape(**{**vars(SHAPE), "timestep_length": 5})
    backend = OnnxTransformerBackend(tmp_path, MODEL_KEY)
    with installed(backend, pipe.transformer), pytest.raises(RuntimeError, match="both exporters"):
        backend.warm_up([unexportable])

    assert backend.exports == 0
    assert list((tmp_path / MODEL_KEY).iterdir()) == []


def test_unavailable_provider_names_the_available_ones(tmp_path: Path) -> None:
    available = ort.get_available_providers()
    with pytest.raises(ValueError, match="NoSuchExecutionProvider") as raised:
        OnnxTransformerBackend(tmp_path, MODEL_KEY, providers=["NoSuchExecutionProvider"])
    assert all(name in str(raised.value) for name in available)


def test_model_key_becomes_one_safe_directory(tmp_path: Path) -> None:
    version = OnnxTransformerBackend(tmp_path, "micro:sha256:0123abcd").model_dir
    hub = OnnxTransformerBackend(tmp_path, "x:hub:Wan-AI/Wan2.2").model_dir
    assert version.parent == hub.parent == tmp_path
    assert version.name.startswith("micro_sha256_0123abcd-")
    assert version != OnnxTransformerBackend(tmp_path, "micro_sha256_0123abcd").model_dir
