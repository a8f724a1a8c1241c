import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from reelserve.accel.options import AccelerationOptions
from reelserve.models import LoadOptions, load_model
from reelserve.models.options import cpu_threads, idle_cores, resolve_device, resolve_dtype
from reelserve.schemas.errors import ErrorCode, ReelserveError

CPU = torch.device("cpu")


def test_defaults_are_auto_and_off() -> None:
    assert LoadOptions().model_dump() == {
        "device": "auto",
        "dtype": "auto",
        "cpu_offload": False,
        "vae_tiling": False,
        "path": None,
        "accelerations": AccelerationOptions().model_dump(),
        "onnx_cache_dir": None,
        "cpu_threads": None,
        "lora_adapters": 0,  # no adapters: no layer wrapped
        "lora_cache_mb": 256,
        "graph_breaks": False,  # one process: compiled blocks hold whole graphs
    }
    assert AccelerationOptions().describe() == []  # eager PyTorch: nothing to report


def test_unknown_option_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        LoadOptions(devices="cpu")  # type: ignore[call-arg]


def test_auto_device_follows_cuda_availability() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(LoadOptions()).type == expected
    assert resolve_device(LoadOptions(device="cpu")) == CPU


def test_cuda_without_cuda_rejected() -> None:
    options = LoadOptions(device="cuda")
    if torch.cuda.is_available():
        assert resolve_device(options).type == "cuda"
        return
    with pytest.raises(ReelserveError) as caught:
        resolve_device(options)
    assert caught.value.code == ErrorCode.invalid_parameter
    assert caught.value.param == "device"
    assert "CUDA is not available" in caught.value.message


def test_dtype_on_cpu() -> None:
    assert resolve_dtype(LoadOptions(), CPU) == torch.float32
    assert resolve_dtype(LoadOptions(dtype="bfloat16"), CPU) == torch.bfloat16
    assert resolve_dtype(LoadOptions(dtype="float32"), CPU) == torch.float32


def test_float16_on_cpu_rejected() -> None:
    with pytest.raises(ReelserveError) as caught:
        resolve_dtype(LoadOptions(dtype="float16"), CPU)
    assert caught.value.code == ErrorCode.invalid_parameter
    assert caught.value.param == "dtype"
    assert "float16" in caught.value.message and "CPU" in caught.value.message


def test_float16_on_cpu_rejected_by_load_model() -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("tiny", LoadOptions(device="cpu", dtype="float16"))
    assert caught.value.param == "dtype"


def test_cpu_offload_on_cpu_rejected() -> None:
    with pytest.raises(ReelserveError) as caught:
        load_model("tiny", LoadOptions(device="cpu", cpu_offload=True))
    assert caught.value.code == ErrorCode.invalid_parameter
    assert caught.value.param == "cpu_offload"


def test_bfloat16_on_cpu_runs_with_float32_vae(generate: Callable[..., np.ndarray]) -> None:
    model = load_model("tiny", LoadOptions(device="cpu", dtype="bfloat16"))
    pipe: Any = model.pipeline
    assert model.dtype == torch.bfloat16
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    frames = generate(pipe, height=64, width=64)
    assert frames.shape == (1, 5, 64, 64, 3)
    assert np.isfinite(frames).all()
    assert frames.min() >= 0.0 and frames.max() <= 1.0


def test_vae_tiling_enabled(generate: Callable[..., np.ndarray]) -> None:
    plain = load_model("tiny", LoadOptions(device="cpu"))
    tiled = load_model("tiny", LoadOptions(device="cpu", vae_tiling=True))
    assert plain.pipeline.vae.use_tiling is False
    assert tiled.pipeline.vae.use_tiling is True
    assert generate(tiled.pipeline).shape == (1, 5, 32, 32, 3)


def test_progress_bar_disabled() -> None:
    model = load_model("tiny", LoadOptions(device="cpu"))
    assert model.pipeline._progress_bar_config == {"disable": True}


def test_cpu_threads_default_to_the_cores_this_process_may_use() -> None:
    assert cpu_threads(LoadOptions()) == len(os.sched_getaffinity(0))
    assert cpu_threads(LoadOptions(cpu_threads=3)) == 3
    with pytest.raises(pydantic.ValidationError):
        LoadOptions(cpu_threads=0)


def test_loading_sets_torch_threads_as_asked() -> None:
    """The server (its Settings.cpu_threads) and `reelserve generate` both load through here."""
    from reelserve.model_host import load_options
    from reelserve.settings import Settings

    before = torch.get_num_threads()
    try:
        load_model("tiny", load_options(Settings(model="tiny", device="cpu", cpu_threads=1)))
        assert torch.get_num_threads() == 1
        load_model("tiny", LoadOptions(device="cpu"))
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def stat_lines(*counters: tuple[int, int]) -> Any:
    """/proc/stat's first line at successive reads: (idle, busy) jiffies summed over the machine."""
    lines = iter(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 ..." for idle, busy in counters)
    return lambda: next(lines)


def test_idle_cores_leaves_out_the_cores_other_processes_keep_busy() -> None:
    machine, cores = os.cpu_count() or 1, cpu_threads(LoadOptions())
    one_busy = stat_lines((1000, 500), (1000 + 100 * (machine - 1), 500 + 100))  # a core's worth of busy jiffies
    assert idle_cores(0.0, one_busy) == max(1, min(cores, machine - 1))
    all_idle = stat_lines((1000, 500), (1000 + 100 * machine, 500))
    assert idle_cores(0.0, all_idle) == cores

    def unreadable() -> str:
        raise OSError("no /proc here")

    assert idle_cores(0.0, unreadable) == cores  # nothing measured: every core it may use
