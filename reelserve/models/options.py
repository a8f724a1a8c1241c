"""How a model is placed: device, dtype, offload, VAE tiling; and the checks that reject bad combos.

Every rejection is a ``ReelserveError(invalid_parameter)`` whose ``param`` names the
``LoadOptions`` field to change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from reelserve.accel.accelerate import check_options
from reelserve.accel.options import AccelerationOptions
from reelserve.schemas.errors import invalid

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# Wan's VAE is run in float32 in the reference examples: it is small, and lower precision shows up
# as visible artifacts in decoded frames.
VAE_DTYPE = torch.float32


class LoadOptions(BaseModel):
    """How to load one model. ``path`` is a local directory or a hub id; it overrides the model's
    default source and is only meaningful for models loaded with ``from_pretrained``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cpu_offload: bool = False
    vae_tiling: bool = False
    path: str | None = None
    accelerations: AccelerationOptions = AccelerationOptions()
    onnx_cache_dir: str | None = None  # where backend 'onnx' keeps exported graphs
    cpu_threads: int | None = Field(None, ge=1)  # torch's intra-op threads; None: every core we may use
    # LoRA adapters per row: the bank's bounds (adapters, MiB); 0 adapters: none taken, no layer wrapped.
    lora_adapters: int = Field(0, ge=0)
    lora_cache_mb: int = Field(256, ge=1)
    # A parallel worker's sequence split exchanges between ranks inside every block, which a compiled
    # graph cannot hold: compiled blocks then break their graphs around the exchange.
    graph_breaks: bool = False


def resolve_device(options: LoadOptions) -> torch.device:
    """``auto`` is CUDA when available, else CPU. Asking for ``cuda`` without CUDA is an error."""
    if options.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise invalid("device", "device 'cuda' was requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(options.device)


def resolve_dtype(options: LoadOptions, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU and bfloat16 on CUDA (float16 on GPUs without bfloat16).

    float16 on CPU is rejected: PyTorch's CPU half-precision conv/attention kernels are missing
    or far slower than float32. bfloat16 on CPU is allowed.
    """
    if options.dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if options.dtype == "float16" and device.type == "cpu":
        raise invalid(
            "dtype",
            "dtype 'float16' is not supported on CPU (slow or missing kernels); use 'float32' or 'bfloat16'",
        )
    return _DTYPES[options.dtype]


def resolve_placement(options: LoadOptions) -> tuple[torch.device, torch.dtype]:
    """Device and dtype for ``options``, with every combination check done up front, so a bad
    option fails before any weights are read."""
    device = resolve_device(options)
    dtype = resolve_dtype(options, device)
    _check_offload(options, device)
    check_options(options.accelerations, device, cpu_offload=options.cpu_offload)
    return device, dtype


def cpu_threads(options: LoadOptions) -> int:
    """Torch's intra-op thread count for ``options``: as asked, else the cores this process may run
    on (its CPU affinity, which containers and ``taskset`` narrow), not the machine's core count."""
    if options.cpu_threads is not None:
        return options.cpu_threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_jiffies(read_stat: Callable[[], str] = lambda: Path("/proc/stat").read_text()) -> tuple[int, int]:
    """(all, busy) jiffies since boot, summed over the machine's cores, from /proc/stat's first line
    (busy: all but idle and iowait). Raises OSError, ValueError or IndexError where it is missing."""
    fields = [int(value) for value in read_stat().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user .. steal
    return total, total - fields[3] - fields[4]


def idle_cores(sample_s: float = 0.1, read_stat: Callable[[], str] = lambda: Path("/proc/stat").read_text()) -> int:
    """The cores this process may use that nothing else is using now: its affinity, less the cores
    other processes kept busy over ``sample_s`` (from /proc/stat; all of them where it is missing).

    For one-shot commands, which cannot afford the server's warm-up measurement: beside a busy core,
    two threads took 2.5x as long as one (docs/benchmarks.md, "A busy machine"), since every op
    waits for a descheduled partner."""
    cores = cpu_threads(LoadOptions())
    try:
        total_before, busy_before = machine_jiffies(read_stat)
        time.sleep(sample_s)
        total_after, busy_after = machine_jiffies(read_stat)
    except (OSError, ValueError, IndexError):
        return cores
    machine = os.cpu_count() or cores
    busy = machine * (busy_after - busy_before) / max(total_after - total_before, 1)
    return max(1, min(cores, round(machine - busy)))


def apply_cpu_threads(options: LoadOptions) -> int:
    """Set torch's thread pool deliberately, the same way for the server and ``reelserve generate``:
    one number from one rule, rather than whatever the first import happened to pick."""
    threads = cpu_threads(options)
    torch.set_num_threads(threads)
    return threads


def _check_offload(options: LoadOptions, device: torch.device) -> None:
    if options.cpu_offload and device.type != "cuda":
        raise invalid("cpu_offload", f"cpu_offload needs a CUDA device; the model is placed on {device.type}")


def component_dtypes(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """Per-component dtypes in the form ``from_pretrained(dtype=...)`` takes: VAE float32, rest ``dtype``."""
    return {"vae": VAE_DTYPE, "default": dtype}


def apply_options(pipe: Any, options: LoadOptions, device: torch.device, dtype: torch.dtype) -> None:
    """Cast, place and configure a diffusers pipeline in place.

    Components take ``dtype`` except the VAE, which stays float32. With ``cpu_offload`` the
    weights stay on CPU and each component moves to ``device`` (which must be CUDA) only while it
    runs; otherwise the whole pipeline moves to ``device``. Progress bars are always off.
    """
    _check_offload(options, device)
    for name, component in pipe.components.items():
        target = VAE_DTYPE if name == "vae" else dtype
        # Skip no-op casts: diffusers warns on every .to(dtype) of a model with fp32-only modules.
        if isinstance(component, torch.nn.Module) and getattr(component, "dtype", None) != target:
            component.to(dtype=target)
    if options.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if options.vae_tiling:
        # Decodes the video in overlapping tiles: peak memory stops growing with resolution.
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
