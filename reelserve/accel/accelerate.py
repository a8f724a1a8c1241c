"""Put a set of ``AccelerationOptions`` on a loaded pipeline, and keep what the runner needs.

Every combination is checked before anything changes: an option that cannot run on this device or
with another option fails with ``invalid_parameter`` naming it, so the server refuses to start
rather than serve something other than what was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.models.attention_dispatch import AttentionBackendName

from reelserve.accel.cfg_batching import CfgBatching
from reelserve.accel.compile import compile_blocks
from reelserve.accel.fused_ffn import fuse_feed_forwards
from reelserve.accel.options import AccelerationOptions
from reelserve.accel.quantize import check_quantization, quantize_int8
from reelserve.accel.step_cache import SkipCounter, StepCache, calibrate_mag_ratios, threshold_for
from reelserve.accel.text_projections import TextProjectionMemo
from reelserve.accel.time_embedding import SharedTimeEmbedding
from reelserve.accel.vae_convolutions import channels_last_vae
from reelserve.schemas.errors import invalid

ONNX_EXCLUSIVE = ("step_cache", "compile", "quantization", "group_offload")
ATTENTION_BACKENDS = tuple(backend.value for backend in AttentionBackendName)


@dataclass
class Accelerated:
    """What ``accelerate`` installed. The runner calls ``before_call`` ahead of each batch's first
    step and ``rows_dropped`` when cancelled rows leave the batch mid-run."""

    options: AccelerationOptions
    cfg: list[CfgBatching] = field(default_factory=list)
    step_cache: StepCache | None = None
    skips: SkipCounter | None = None
    onnx: Any = None
    text_memo: TextProjectionMemo | None = None
    time_embedding: list[SharedTimeEmbedding] = field(default_factory=list)
    fused_ffn: int = 0  # feed-forwards running fused (none off the CPU or in half precision)
    # A parallel worker's other ranks priming their own (``ParallelRanks.prime``): steps, or None for a reset.
    on_prime: Callable[[int | None], None] | None = None

    def before_call(self, steps: int, negative: torch.Tensor | None) -> None:
        if self.on_prime is not None:
            self.on_prime(steps)
        if self.text_memo is not None:
            self.text_memo.forget()  # the last batch's prompts
        if self.step_cache is not None:
            self.step_cache.prepare(steps)
        for wrapper in self.cfg:
            wrapper.prime(negative)

    def rows_dropped(self, negative: torch.Tensor | None) -> None:
        if self.on_prime is not None:
            self.on_prime(None)
        if self.step_cache is not None:
            self.step_cache.reset()  # cached residuals are for the old batch's rows
        for wrapper in self.cfg:
            wrapper.prime(negative)

    def describe(self) -> list[str]:
        return self.options.describe(self.step_cache.threshold if self.step_cache else None)


def check_options(
    options: AccelerationOptions, device: torch.device, cpu_offload: bool = False, two_experts: bool = False
) -> None:
    """Reject what cannot run, before any weights are read. Whether an attention backend's package
    is installed is known only once diffusers checks it, after loading; its name is checked here."""
    if options.attention_backend not in ATTENTION_BACKENDS:
        raise invalid(
            "attention_backend",
            f"unknown attention backend {options.attention_backend!r}; diffusers has: {', '.join(ATTENTION_BACKENDS)}",
        )
    if options.step_cache == "magcache" and two_experts:
        raise invalid(
            "step_cache",
            "step cache 'magcache' is calibrated per transformer and a two-expert model switches transformers "
            "mid-run; use fbcache, taylorseer or pab",
        )
    if options.backend == "onnx":
        clash = [name for name in ONNX_EXCLUSIVE if getattr(options, name) not in (False, "none")]
        if clash or cpu_offload:
            name = clash[0] if clash else "cpu_offload"
            raise invalid(
                "backend",
                f"backend 'onnx' runs the whole transformer in ONNX Runtime and cannot be combined with {name}; "
                "use backend 'torch' for it",
            )
    if options.compile and options.quantization != "none" and device.type == "cpu":
        raise invalid("compile", "compile with quantization 'int8' is not supported on CPU; pick one of the two")
    if options.compile and options.step_cache != "none":
        raise invalid("compile", "compile with a step cache is not supported: the cache's Python hooks break the graph")
    if options.quantization != "none":
        check_quantization(device)
    if options.group_offload and device.type != "cuda":
        raise invalid("group_offload", f"group_offload needs a CUDA device; the model is placed on {device.type}")
    if options.group_offload and cpu_offload:
        raise invalid("group_offload", "group_offload and cpu_offload both move weights; choose one")


def accelerate(
    pipeline: Any,
    options: AccelerationOptions,
    *,
    device: torch.device,
    model: str,
    calibration_run: Callable[[int], None] | None = None,
    default_steps: int = 25,
    onnx_cache_dir: Path | None = None,
    model_key: str | None = None,
    graph_breaks: bool = False,
) -> Accelerated:
    """Install ``options`` on ``pipeline`` in place.

    ``calibration_run(steps)`` makes one short pipeline call; MagCache uses it to measure this
    model's residual ratios. ``model_key`` names the weights in the ONNX export cache. ``graph_breaks``:
    compiled blocks may break their graphs (a parallel worker's exchange runs between two pieces).
    """
    check_options(options, device, two_experts=getattr(pipeline, "transformer_2", None) is not None)
    done = Accelerated(options)
    transformers = [t for t in (pipeline.transformer, getattr(pipeline, "transformer_2", None)) if t is not None]
    _set_attention_backend(transformers, options.attention_backend)
    if options.quantization == "int8":
        for transformer in transformers:
            quantize_int8(transformer, device)
    if options.group_offload:
        for transformer in transformers:
            transformer.enable_group_offload(
                onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1,
            )
    if options.vae_slicing:
        pipeline.vae.enable_slicing()
    if options.channels_last:
        channels_last_vae(pipeline.vae)
    if options.fused_ffn and options.backend == "torch" and not options.compile:
        # Before a step cache calibrates on the transformer; not under compile (inductor fuses its own way).
        done.fused_ffn = sum(fuse_feed_forwards(transformer) for transformer in transformers)
    if options.step_cache != "none":
        done.step_cache = _step_cache(pipeline, options, model, calibration_run, default_steps)
    if options.compile:
        for transformer in transformers:
            compile_blocks(transformer, fullgraph=not graph_breaks)
    if options.backend == "onnx":
        done.onnx = _onnx_backend(pipeline.transformer, onnx_cache_dir, model_key or model)
    if options.cfg_batching:
        done.cfg = [CfgBatching(transformer) for transformer in transformers]
    if options.shared_time_embedding and options.backend == "torch":
        done.time_embedding = [SharedTimeEmbedding(transformer) for transformer in transformers]
    if options.backend == "torch" and not options.compile:
        # Not with compile: the counter's Python hooks inside compiled blocks would recompile them on
        # every call (and compile excludes step caches, so there would be nothing to count).
        done.skips = SkipCounter(pipeline.transformer)
        if device.type == "cpu":  # exact; on a GPU its comparison would wait for the stream each step
            done.text_memo = TextProjectionMemo(transformers)
    return done


def _set_attention_backend(transformers: list[torch.nn.Module], backend: str) -> None:
    if backend == "native":
        return
    for transformer in transformers:
        try:
            transformer.set_attention_backend(backend)
        except (ValueError, RuntimeError, ImportError) as exc:
            # diffusers says what is missing (a package, a GPU) or which names exist.
            raise invalid("attention_backend", f"attention backend {backend!r} is not usable here: {exc}") from None


def _step_cache(
    pipeline: Any, options: AccelerationOptions, model: str, calibration_run: Callable[[int], None] | None,
    default_steps: int,
) -> StepCache:
    threshold = threshold_for(options.step_cache, model, options.step_cache_threshold)
    ratios = None
    if options.step_cache == "magcache":
        if calibration_run is None:
            raise invalid("step_cache", "step cache 'magcache' needs a calibration run at load time")
        ratios = calibrate_mag_ratios(pipeline, lambda: calibration_run(default_steps), default_steps)
    return StepCache(options.step_cache, threshold, pipeline, ratios)


def _onnx_backend(transformer: torch.nn.Module, cache_dir: Path | None, model_key: str) -> Any:
    from reelserve.accel.onnx_backend import OnnxTransformerBackend  # onnx is imported only when asked for

    if cache_dir is None:
        raise invalid("backend", "backend 'onnx' needs a directory for exported graphs")
    try:
        backend = OnnxTransformerBackend(cache_dir, model_key)
    except ValueError as exc:
        raise invalid("backend", str(exc)) from None
    backend.install(transformer)
    return backend
