"""Overload: measure the server's capacity, then offer 10x that for 60 s with the load probe.

What it shows: no 5xx answers, every excess request refused at once with 429/503 and Retry-After,
admitted jobs' p99 end-to-end within their deadlines, and the server's memory (RSS) staying bounded.

    .venv/bin/python bench/overload.py [--factor 10 --seconds 60 --model tiny]

Capacity is measured first on the same server: a closed burst of ``--capacity-jobs`` identical-shape
jobs submitted at once, completed jobs per second of the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import threading

from _harness import machine, measure_capacity, percentile, print_table, rss_mib, server_process

from reelserve.loadgen.runner import run_load
from reelserve.loadgen.workload import LoadConfig

PARAMS = {"size": "64x64", "num_frames": 9, "num_inference_steps": 4}
DEADLINES = {"realtime": 10.0, "standard": 30.0, "batch": 120.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--capacity-jobs", type=int, default=24)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--json", help="also write the load probe's report (every request) here")
    parser.add_argument("--plot", help="also write the load probe's PNG plot here")
    args = parser.parse_args()

    with server_process("--model", args.model, "--device", "cpu") as running:
        capacity = measure_capacity(running.url, args.capacity_jobs, PARAMS)
        rate = capacity * args.factor
        rss: list[float] = []
        stop = threading.Event()

        def sample_rss() -> None:
            while not stop.wait(1.0):
                rss.append(rss_mib(running.pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        rss_before = rss_mib(running.pid)
        sampler.start()
        config = LoadConfig(
            url=running.url, rate=rate, duration_s=args.seconds, max_requests=int(rate * args.seconds * 1.5) + 10,
            drain_timeout_s=180, repeat_rate=0.0, tier_mix={"realtime": 0.2, "standard": 0.6, "batch": 0.2},
            deadlines=DEADLINES, params=PARAMS, seed=0,
        )
        report = asyncio.run(run_load(config))
        if args.json:
            report.to_json(args.json)
        if args.plot:
            report.plot(args.plot)
        stop.set()
        sampler.join()
        rss_after = rss_mib(running.pid)

    print(f"machine: {machine()}")
    print(f"capacity {capacity:.2f} jobs/s (burst of {args.capacity_jobs}); offered {rate:.1f} req/s "
          f"({args.factor:g}x) for {args.seconds:g} s; {report.overall.sent} requests")
    rows = []
    for tier, stats in [*sorted(report.tiers.items()), ("all", report.overall)]:
        records = [r for r in report.records if (tier == "all" or r.tier == tier) and r.final_status == "completed"]
        e2e = [r.total_s for r in records if r.total_s is not None]
        rows.append([
            tier, str(stats.sent), str(stats.accepted), str(stats.completed),
            ", ".join(f"{k}: {v}" for k, v in stats.rejected_by_code.items()) or "0",
            str(stats.server_errors), str(stats.rejections_without_retry_after),
            f"{percentile(e2e, 50):.2f}", f"{percentile(e2e, 99):.2f}",
            f"{DEADLINES.get(tier, float('nan')):g}", str(stats.deadline_misses),
            ", ".join(f"{k}: {v}" for k, v in stats.failed.items()) or "0", str(stats.unfinished),
        ])
    print_table(
        "Overload: per tier",
        ["tier", "sent", "admitted", "completed", "refused (code: n)", "5xx", "refused w/o Retry-After",
         "p50 e2e s", "p99 e2e s", "deadline s", "deadline misses", "failed", "unfinished"],
        rows,
    )
    print_table(
        "Server memory (RSS, MiB)",
        ["before", "peak during", "after"],
        [[f"{rss_before:.0f}", f"{max(rss):.0f}" if rss else "nan", f"{rss_after:.0f}"]],
    )


if __name__ == "__main__":
    main()
