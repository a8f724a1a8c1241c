"""Time one denoising step of the full-size Wan2.2 transformers, with random weights (nothing is downloaded).

A step here is one classifier-free-guidance step: a conditional and an unconditional transformer forward
on the same latents. Per (model, resolution, acceleration): warm-up steps, then ``--steps`` timed steps
(synchronised on CUDA); the table gives the median ms per step, the step's analytic FLOPs (see
``forward_flops``), the TFLOP/s that implies, and peak CUDA memory (weights included).

    python -m bench.gpu.step_timing --model all --resolutions 480p,720p --out gpu.json   # on a GPU
    python -m bench.gpu.step_timing --toy                                                # CPU smoke run

Accelerations: ``eager`` (two batch-1 forwards), ``cfg-batched`` (one batch-2 forward), ``compiled``
(diffusers' regional ``compile_repeated_blocks(fullgraph=True)``, compilation inside the warm-up) and
``int8`` (torchao int8 dynamic-activation/int8-weight on the blocks' linears, then compiled; CUDA only).
A14B runs one of its two experts per step and both have the same architecture, so one is timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench._harness import print_table
from reelserve.planning.wan_sizes import MODELS, WanModel, forward_flops, patch_tokens, toy

ACCELERATIONS = ("eager", "cfg-batched", "compiled", "int8")
TIMESTEP = 500.0  # mid-schedule; the value does not change the work done


def build_meta_transformer(config: dict[str, Any]) -> nn.Module:
    """The transformer with no storage at all: shapes and dtypes only, free at any size."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**config)


def build_transformer(config: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """The transformer on ``device`` with seeded random weights, in ``dtype`` except for the modules diffusers
    keeps in float32 when loading (``_keep_in_fp32_modules``), matching ``from_pretrained(torch_dtype=...)``."""
    model = build_meta_transformer(config)
    keep_fp32 = set(model._keep_in_fp32_modules or ())
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            target = torch.float32 if keep_fp32 & {*module_name.split("."), name} else dtype
            module._parameters[name] = nn.Parameter(torch.empty_like(param, dtype=target), requires_grad=False)
    model.to_empty(device=device)
    _fill_random_(model, device, seed)
    # RoPE's frequency tables are non-persistent buffers computed in __init__, so to_empty left garbage.
    rope = model.rope
    model.rope = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len).to(device)
    return model.eval()


@torch.no_grad()
def _fill_random_(model: nn.Module, device: torch.device, seed: int) -> None:
    # In place, one tensor at a time: no second copy of the weights ever exists.
    generator = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        is_norm = isinstance(module, nn.LayerNorm | nn.RMSNorm)
        for name, param in module.named_parameters(recurse=False):
            if is_norm:
                param.fill_(1.0 if name == "weight" else 0.0)
            elif name == "scale_shift_table":
                param.normal_(0.0, param.shape[-1] ** -0.5, generator=generator)  # as diffusers initialises it
            elif param.ndim == 1:
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=generator)


@dataclass(frozen=True)
class StepInputs:
    latents: torch.Tensor  # (1, C, F, H, W)
    timestep: torch.Tensor  # (1,) or (1, tokens)
    prompt: torch.Tensor  # (1, text_len, text_dim)
    negative_prompt: torch.Tensor


def make_inputs(model: WanModel, latent_shape: tuple[int, int, int, int], device: torch.device,
                dtype: torch.dtype, seed: int = 0) -> StepInputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    text_shape = (1, model.text_len, model.transformer["text_dim"])

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    tokens = patch_tokens(model.transformer, latent_shape)
    timestep = torch.full((1, tokens) if model.per_token_timesteps else (1,), TIMESTEP, device=device)
    return StepInputs(randn(1, *latent_shape), timestep, randn(*text_shape), randn(*text_shape))


def cfg_step(transformer: nn.Module, inputs: StepInputs, batched: bool) -> Callable[[], None]:
    """One guidance step: cond and uncond as one batch-2 forward, or as two batch-1 forwards."""
    if batched:
        latents = torch.cat([inputs.latents, inputs.latents])
        timestep = torch.cat([inputs.timestep, inputs.timestep])
        prompts = torch.cat([inputs.prompt, inputs.negative_prompt])
        return lambda: transformer(latents, timestep, prompts, return_dict=False)

    def two_forwards() -> None:
        transformer(inputs.latents, inputs.timestep, inputs.prompt, return_dict=False)
        transformer(inputs.latents, inputs.timestep, inputs.negative_prompt, return_dict=False)

    return two_forwards


def time_step(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``step`` after ``warmup`` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        timings = []
        for _ in range(repeats):
            _synchronize(device)
            started = time.perf_counter()
            step()
            _synchronize(device)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def int8_unavailable(device: torch.device) -> str | None:
    """Why int8 cannot run here, or None if it can."""
    if device.type != "cuda":
        return "n/a: needs CUDA + torchao"
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig  # noqa: F401
    except ImportError:
        return "n/a: needs CUDA + torchao (>= 0.9)"
    return None


def prepare(model: WanModel, acceleration: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A fresh transformer set up for ``acceleration``; fresh so that compiling or quantising one never
    leaks into another's timings or memory."""
    transformer = build_transformer(model.transformer, device, dtype)
    if acceleration == "int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        # The blocks hold all but ~1 % of the FLOPs; the float32 embedders stay as diffusers keeps them.
        quantize_(transformer, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn.startswith("blocks."))
    if acceleration in ("compiled", "int8"):
        torch._dynamo.reset()
        # One graph serves every block; each resolution adds a recompile, so keep dynamo from giving up.
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, 64)
        # Static shapes: each resolution gets its own graph, as a server pinned to one size would, rather
        # than the second resolution switching every block to a slower dynamic-shape graph.
        transformer.compile_repeated_blocks(fullgraph=True, dynamic=False)
    return transformer


@dataclass
class StepTiming:
    model: str
    resolution: str
    size: str  # width x height x frames
    latent: str  # channels x frames x height x width
    tokens: int
    acceleration: str
    step_tflop: float  # analytic, cond + uncond
    ms_per_step: float | None = None
    tflops_per_s: float | None = None
    peak_memory_gib: float | None = None  # CUDA only; CPU has no per-config peak to read
    note: str = ""


def run(models: list[WanModel], resolutions: list[str], accelerations: list[str], device: torch.device,
        dtype: torch.dtype, warmup: int, repeats: int) -> list[StepTiming]:
    results = []
    for model in models:
        for acceleration in accelerations:
            rows = [_describe(model, label, acceleration) for label in resolutions]
            reason = int8_unavailable(device) if acceleration == "int8" else None
            if reason:
                for row in rows:
                    row.note = reason
                results += rows
                continue
            try:
                transformer = prepare(model, acceleration, device, dtype)
            except Exception as error:  # noqa: BLE001 -- e.g. OOM building it; the other configs still run
                for row in rows:
                    row.note = _failure(error)
                results += rows
                continue
            for row in rows:
                _measure(row, model, transformer, device, dtype, warmup, repeats)
                took = f"{row.ms_per_step:.1f} ms" if row.ms_per_step is not None else row.note
                print(f"  {row.model} {row.resolution} {row.acceleration}: {took}", file=sys.stderr)
            results += rows
            del transformer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _failure(error: Exception) -> str:
    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory"
    first_line = (str(error).splitlines() or [""])[0]
    return f"failed: {type(error).__name__}: {first_line[:120]}"


def _describe(model: WanModel, label: str, acceleration: str) -> StepTiming:
    width, height = model.resolutions[label]
    latent = model.latent_shape(width, height)
    flops = forward_flops(model.transformer, latent, model.text_len, model.per_token_timesteps)
    return StepTiming(
        model=model.name, resolution=label, size=f"{width}x{height}x{model.frames}",
        latent="x".join(map(str, latent)), tokens=patch_tokens(model.transformer, latent),
        acceleration=acceleration, step_tflop=2 * flops.total / 1e12,
    )


def _measure(row: StepTiming, model: WanModel, transformer: nn.Module, device: torch.device, dtype: torch.dtype,
             warmup: int, repeats: int) -> None:
    width, height = model.resolutions[row.resolution]
    inputs = make_inputs(model, model.latent_shape(width, height), device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        timings = time_step(cfg_step(transformer, inputs, batched=row.acceleration == "cfg-batched"),
                            device, warmup, repeats)
    except Exception as error:  # noqa: BLE001 -- one failing config must not lose the rest of a GPU run
        row.note = _failure(error)
        return
    row.ms_per_step = statistics.median(timings)
    row.tflops_per_s = row.step_tflop / (row.ms_per_step / 1000)
    if device.type == "cuda":
        row.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30


def machine(device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    import diffusers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": f"{device.type}: {name}", "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__, "cuda": str(torch.version.cuda), "diffusers": diffusers.__version__,
            "platform": platform.platform(), "torch_threads": str(torch.get_num_threads())}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_results(results: list[StepTiming]) -> None:
    print_table(
        "Wan2.2 transformer, one CFG denoising step (cond + uncond), median",
        ["model", "res", "size", "tokens", "acceleration", "ms/step", "TFLOP/step", "TFLOP/s", "peak GiB", "note"],
        [[r.model, r.resolution, r.size, str(r.tokens), r.acceleration, _fmt(r.ms_per_step, ".1f"),
          _fmt(r.step_tflop, ".4g"), _fmt(r.tflops_per_s, ".3g"), _fmt(r.peak_memory_gib, ".1f"), r.note]
         for r in results],
    )


def _choices(text: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return chosen


def main(argv: list[str] | None = None) -> list[StepTiming]:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.step_timing", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--resolutions", type=lambda s: _choices(s, ["480p", "720p"], "resolution"),
                        default=["480p", "720p"], help="comma-separated: 480p,720p")
    parser.add_argument("--accelerations", type=lambda s: _choices(s, ACCELERATIONS, "acceleration"),
                        default=list(ACCELERATIONS), help=f"comma-separated: {','.join(ACCELERATIONS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed CFG steps per config")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    parser.add_argument("--toy", action="store_true", help="tiny transformer and 64x64/96x96 x 9 frames: a CPU smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="also write machine and results as JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu" and not args.toy:
        parser.error("the full-size transformers need a GPU (A14B alone is 57 GB in float32); "
                     "use --toy for a CPU smoke run")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = [MODELS[name] for name in (MODELS if args.model == "all" else [args.model])]
    if args.toy:
        models = [toy(model) for model in models]

    info = machine(device, dtype)
    print(", ".join(f"{key} {value}" for key, value in info.items()))
    results = run(models, args.resolutions, args.accelerations, device, dtype, args.warmup, args.steps)
    print_results(results)
    if args.out:
        settings = {"toy": args.toy, "steps": args.steps, "warmup": args.warmup, "text_len": models[0].text_len}
        args.out.write_text(json.dumps({"machine": info, "settings": settings,
                                        "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
