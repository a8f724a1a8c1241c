"""Time one guided denoising step of Wan2.2 per ``--parallel`` layout, through the worker's own group
(``reelserve.parallel.ranks.ParallelRanks``: the same hooks, exchange and commands as serving), next to
the planner's prediction (``reelserve plan --parallel-layouts``).

Random weights at full size on every rank (nothing downloaded), bf16, one rank per GPU, NCCL. Per
layout: ``--warmup`` untimed steps, then ``--steps`` timed ones, rank 0 synchronising its device
around each (every rank's work ends before rank 0 has its result). ``--toy`` runs the tiny transformer
on CPU processes with gloo: a smoke run of the script, not a measurement.

    python -m bench.gpu.parallel_step --model a14b --resolution 720p --layouts "none;cfg=2;ulysses=2;cfg=2,ulysses=4"
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.gpu.step_timing import build_transformer, machine, make_inputs
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.commands import GroupSpec, forward_call
from reelserve.parallel.ranks import ParallelRanks
from reelserve.planning.parallel import GPUS, predict
from reelserve.planning.wan_sizes import MODELS, WanModel, toy


class StepPipeline:
    """What a rank of this benchmark holds: one transformer (A14B's experts cost the same per step)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer, self.transformer_2, self.vae, self._current_timestep = transformer, None, None, None


def build(name: str, small: bool, rank: int) -> tuple[StepPipeline, None, None]:
    """Every rank's transformer from the same seed: the same weights everywhere, as a loaded model has."""
    model = toy(MODELS[name]) if small else MODELS[name]
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return StepPipeline(build_transformer(model.transformer, device, dtype).eval()), None, None


@dataclass
class LayoutTiming:
    layout: str
    ranks: int
    ms_per_step: float | None
    predicted_ms: float | None
    note: str = ""


def time_layout(model: WanModel, name: str, resolution: str, layout: ParallelLayout, small: bool,
                warmup: int, steps: int) -> LayoutTiming:
    pipeline, _, _ = build(name, small, 0)
    device = next(pipeline.transformer.parameters()).device
    dtype = next(pipeline.transformer.blocks.parameters()).dtype
    backend = "nccl" if device.type == "cuda" else "gloo"
    ranks = ParallelRanks(GroupSpec(layout, functools.partial(build, name, small), backend=backend,
                                    threads=1 if device.type == "cpu" else None), pipeline, None)
    width, height = model.resolutions[resolution]
    inputs = make_inputs(model, model.latent_shape(width, height), device, dtype)
    tensors = {"latents": inputs.latents, "timestep": inputs.timestep, "prompts": inputs.prompt,
               "negatives": inputs.negative_prompt}
    call = forward_call("transformer", tensors, {}, 500.0, ())
    ranks.start()
    try:
        timings = []
        with torch.inference_mode():
            for i in range(warmup + steps):
                _synchronize(device)
                started = time.perf_counter()
                ranks.forward(call, tensors)
                _synchronize(device)
                if i >= warmup:
                    timings.append((time.perf_counter() - started) * 1000)
    finally:
        ranks.close()
    gpu = next((GPUS[g] for g in GPUS if device.type == "cuda" and g in torch.cuda.get_device_name(device)), None)
    predicted = None if gpu is None or small else predict(model, resolution, layout, gpu).step_s * 1000
    return LayoutTiming(str(layout), layout.world, statistics.median(timings), predicted)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_results(results: list[LayoutTiming]) -> None:
    base = next((r.ms_per_step for r in results if r.ranks == 1 and r.ms_per_step), None)
    print("| layout | ranks | ms/step | predicted ms/step | measured / predicted | speed-up vs 1 rank | note |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.ms_per_step / r.predicted_ms:.2f}" if r.ms_per_step and r.predicted_ms else "n/a"
        speed = f"{base / r.ms_per_step:.2f}x" if base and r.ms_per_step else "n/a"
        measured = f"{r.ms_per_step:.1f}" if r.ms_per_step else "n/a"
        predicted = f"{r.predicted_ms:.1f}" if r.predicted_ms else "n/a"
        print(f"| {r.layout} | {r.ranks} | {measured} | {predicted} | {ratio} | {speed} | {r.note} |")


def main(argv: list[str] | None = None) -> list[LayoutTiming]:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.parallel_step", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="a14b")
    parser.add_argument("--resolution", choices=["480p", "720p"], default="480p")
    parser.add_argument("--layouts", default="none;cfg=2;ulysses=2;ring=2",
                        help="';'-separated layouts, e.g. 'none;cfg=2;cfg=2,ulysses=2'")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--toy", action="store_true", help="tiny transformer on CPU processes (gloo): a smoke run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.toy:
        parser.error("the full-size transformers need GPUs; use --toy for a CPU smoke run")
    model = toy(MODELS[args.model]) if args.toy else MODELS[args.model]
    available = torch.cuda.device_count() if torch.cuda.is_available() else 4
    results = []
    for text in _layouts(args.layouts):
        layout = ParallelLayout.parse(text)
        if layout.world > available:
            results.append(LayoutTiming(str(layout), layout.world, None, None, f"needs {layout.world} devices"))
            continue
        results.append(time_layout(model, args.model, args.resolution, layout, args.toy, args.warmup, args.steps))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info: dict[str, Any] = machine(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    print(", ".join(f"{key} {value}" for key, value in info.items()))
    print_results(results)
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "model": args.model, "resolution": args.resolution,
                                        "toy": args.toy, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return results


def _layouts(text: str) -> list[str]:
    """'none;cfg=2;cfg=2,ulysses=2' (';' between layouts, as ',' is inside one)."""
    return [part.strip() for part in text.split(";") if part.strip()]


if __name__ == "__main__":
    main()
