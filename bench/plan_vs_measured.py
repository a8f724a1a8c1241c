"""`reelserve plan` against a measured run: does the simulation predict p95 and throughput within 25 %?

1. Start a server (tiny model), measure its capacity with a burst, and let it learn its cost model
   from a warm-up load (the server saves it to <data-dir>/cost_model.json).
2. Measure: Poisson arrivals at ``--load`` x capacity for ``--seconds``, a repeat rate (cache hits),
   one shape; p95 of the server's end-to-end time (timings.total_s) and completed jobs per second.
3. Predict the same workload with the saved cost model: from the workload description (fresh
   seeded arrivals, 20x as many requests as the run sent, so the plan gives its long-run answer
   rather than one short draw's), and replaying the measured run's own arrival times.

    .venv/bin/python bench/plan_vs_measured.py [--load 0.7 --seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio

from _harness import machine, measure_capacity, percentile, print_table, server_process

from reelserve.engine.cost_model import CostModel
from reelserve.loadgen.runner import run_load
from reelserve.loadgen.workload import LoadConfig
from reelserve.planning.simulate import Arrival, simulate
from reelserve.planning.workload import RequestShape, ServerConfig, Workload

SHAPE = {"size": "64x64", "num_frames": 9, "num_inference_steps": 8}
REPEAT_RATE = 0.2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", type=float, default=0.7, help="offered load as a fraction of capacity")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    with server_process("--model", "tiny", "--device", "cpu") as running:
        capacity = measure_capacity(running.url, 16, SHAPE)
        warm = LoadConfig(url=running.url, rate=capacity * 0.5, duration_s=15, max_requests=500, params=SHAPE, seed=1)
        asyncio.run(run_load(warm))  # the cost model learns batch sizes 1..4 of this shape
        rate = capacity * args.load
        config = LoadConfig(
            url=running.url, rate=rate, duration_s=args.seconds, max_requests=int(rate * args.seconds * 2) + 10,
            drain_timeout_s=120, repeat_rate=REPEAT_RATE, params=SHAPE, seed=7,
        )
        report = asyncio.run(run_load(config))
        cost_model = CostModel.load(running.data_dir / "cost_model.json")

    completed = [r for r in report.records if r.final_status == "completed" and r.total_s is not None]
    measured_p95 = percentile([r.total_s for r in completed], 95)  # type: ignore[misc]
    measured_tput = len(completed) / report.span_s

    width, height = (int(v) for v in SHAPE["size"].split("x"))  # type: ignore[attr-defined]
    workload = Workload(
        rate_per_min=rate * 60, model="tiny",
        mix=[RequestShape(width=width, height=height, frames=SHAPE["num_frames"], steps=SHAPE["num_inference_steps"],
                          guidance=5.0)],
        repeat_rate=REPEAT_RATE, tier_mix={"standard": 1.0}, requests=report.overall.sent,
        server=ServerConfig(workers=1, max_batch_size=4, max_wait_s=0.05), seed=7,
    )
    predicted = simulate(workload.model_copy(update={"requests": 20 * report.overall.sent}), cost_model)
    replay = [
        Arrival(time_s=r.scheduled_s, shape=0, tier="standard", content=r.repeat_of if r.repeat_of is not None else r.index)
        for r in report.records
    ]
    replayed = simulate(workload, cost_model, arrivals=replay)

    def row(name: str, p95: float, tput: float) -> list[str]:
        return [name, f"{p95:.2f}", f"{p95 / measured_p95 - 1:+.0%}", f"{tput:.2f}", f"{tput / measured_tput - 1:+.0%}"]

    print(f"machine: {machine()}")
    print(f"capacity {capacity:.2f} jobs/s; offered {rate:.2f} req/s ({args.load:g}x) for {args.seconds:g} s, "
          f"{report.overall.sent} requests, repeat rate {REPEAT_RATE}; cost model from "
          f"{cost_model.observations()} pipeline calls; measured cache hits {report.overall.cache_hits}")
    print_table(
        "reelserve plan vs measured (end-to-end = acceptance to completion, server clock)",
        ["", "p95 e2e s", "vs measured", "throughput /s", "vs measured"],
        [
            row("measured", measured_p95, measured_tput),
            row("plan (workload description)", predicted.overall.latency_s.p95, predicted.overall.throughput_per_s),
            row("plan (measured arrivals replayed)", replayed.overall.latency_s.p95, replayed.overall.throughput_per_s),
        ],
    )


if __name__ == "__main__":
    main()
