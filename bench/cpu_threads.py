"""How the pipeline's videos per second depend on its lanes and torch threads, for the model and
shape served: the measurement behind choosing ``--pipeline-lanes`` and ``--cpu-threads`` at warm-up
(``reelserve/engine/lane_tuning.py``).

Interleaved full batches (``--batch`` rows per lane, at the full step count) through the serving
lanes for each plan (one lane of 1, 2, 4, ... threads; 2, 4, ... lanes sharing the cores), medians
per plan. The lanes share the model's weights; lane 0 is this thread.

    .venv/bin/python bench/cpu_threads.py [--model micro --batch 4 --runs 4 --steps 25]
"""

from __future__ import annotations

import argparse
import os
import time

from _harness import machine, median, print_table

from reelserve.accel.options import SERVING_DEFAULTS
from reelserve.engine.lane_tuning import plans
from reelserve.engine.lanes import PipelineLanes
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.schemas import GenerationParams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="micro")
    parser.add_argument("--batch", type=int, default=4, help="rows per lane")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    model = load_model(args.model, LoadOptions(device="cpu", accelerations=SERVING_DEFAULTS), lanes=cores)
    limits = model.limits
    lanes = PipelineLanes([PipelineRunner(m.pipeline, m.device, m.max_sequence_length, accelerated=m.accelerated)
                           for m in model.lanes])

    def rows(tag: str, count: int) -> list[tuple[str, GenerationParams]]:
        return [(f"{tag}-{i}", GenerationParams(
            model=args.model, prompt=f"a red circle moving right {tag} {i}", width=limits.default_width,
            height=limits.default_height, num_frames=limits.default_frames, fps=limits.default_fps,
            num_inference_steps=args.steps, guidance_scale=limits.default_guidance, seed=i,
        )) for i in range(count)]

    options = plans(cores, cores)
    for plan in options:  # every lane's first call, off the clock
        lanes.use(plan.lanes, plan.threads)
        lanes.run(rows(f"warm-{plan}", args.batch * plan.lanes))
    seconds: dict[object, list[float]] = {plan: [] for plan in options}
    for run in range(args.runs):
        for plan in options if run % 2 == 0 else list(reversed(options)):
            lanes.use(plan.lanes, plan.threads)
            started = time.perf_counter()
            lanes.run(rows(f"{run}-{plan}", args.batch * plan.lanes))
            seconds[plan].append(time.perf_counter() - started)
    lanes.shutdown()
    table = [
        [str(plan), f"{median(v):.2f}", f"{args.batch * plan.lanes / median(v):.2f}", " ".join(f"{s:.2f}" for s in v)]
        for plan, v in seconds.items()
    ]
    print_table(
        f"Full batches ({args.batch} rows per lane), {args.model} {limits.default_width}x{limits.default_height}x"
        f"{limits.default_frames}, {args.steps} steps, guidance {limits.default_guidance}, serving accelerations; "
        f"medians of {args.runs} interleaved runs\n{machine()}",
        ["plan", "batch s", "videos/s", "runs s"], table,
    )


if __name__ == "__main__":
    main()
