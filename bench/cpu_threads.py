"""How one pipeline call's time depends on torch's CPU thread count, for the model and shape served:
the measurement behind choosing ``--cpu-threads`` at warm-up (``reelserve/models/thread_tuning.py``).

Interleaved calls of one batch through the serving runner at each thread count (1, 2, 4, ... up to
the cores), medians per count, and the split into denoising steps and the rest of the call.

    .venv/bin/python bench/cpu_threads.py [--model micro --batch 4 --runs 6 --steps 25]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _harness import machine, median, print_table

from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.models.thread_tuning import candidates
from reelserve.schemas import GenerationParams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="micro")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    model = load_model(args.model, LoadOptions(device="cpu"))
    limits = model.limits
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length)
    counts = candidates(len(os.sched_getaffinity(0)))

    def rows(tag: str) -> list[tuple[str, GenerationParams]]:
        return [(f"{tag}-{i}", GenerationParams(
            model=args.model, prompt=f"a red circle moving right {tag} {i}", width=limits.default_width,
            height=limits.default_height, num_frames=limits.default_frames, fps=limits.default_fps,
            num_inference_steps=args.steps, guidance_scale=limits.default_guidance, seed=i,
        )) for i in range(args.batch)]

    runner.run(rows("warm-up"))
    results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
    for run in range(args.runs):
        for threads in counts if run % 2 == 0 else list(reversed(counts)):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            outcome = runner.run(rows(f"{run}-{threads}"))
            timing = outcome.calls[0]
            results[threads].append((time.perf_counter() - started, timing.step_s or 0.0, timing.overhead_s))
    rows_out = [
        [str(n), f"{median([r[0] for r in v]):.2f}", f"{median([r[1] for r in v]) * 1000:.0f}",
         f"{median([r[2] for r in v]):.2f}", " ".join(f"{r[0]:.2f}" for r in v)]
        for n, v in results.items()
    ]
    print_table(
        f"One call of {args.batch} rows, {args.model} {limits.default_width}x{limits.default_height}x"
        f"{limits.default_frames}, {args.steps} steps, guidance {limits.default_guidance}; medians of "
        f"{args.runs} interleaved runs\n{machine()}",
        ["torch threads", "call s", "step ms", "rest of the call s", "runs s"], rows_out,
    )


if __name__ == "__main__":
    main()
