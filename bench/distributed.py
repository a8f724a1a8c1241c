"""Distributed mode vs embedded, on this machine, real processes on loopback:

1. overhead of one request: ``POST /v1/videos/sync`` against ``reelserve serve`` and against
   ``reelserve api`` + one ``reelserve worker`` (same model, settings, Redis for the latter),
   requests interleaved so drift hits both;
2. throughput: a burst of jobs through the API with 1 worker, then 2 workers (each with torch's
   default threads), then 2 workers with one torch thread each.

    .venv/bin/python bench/distributed.py [--runs 20] [--jobs 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _harness import machine, median, percentile, print_table, redis_server, server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster import Cluster

SMALL = {"prompt": "a lighthouse in a storm", "size": "64x64", "num_frames": 9, "num_inference_steps": 8, "seed": 1}
BURST = {"size": "128x128", "num_frames": 17, "num_inference_steps": 50}


def overhead(runs: int, redis_url: str, workdir: Path) -> list[list[str]]:
    # The embedded server's defaults for batching (max_wait_ms 50), so only the mode differs.
    cluster = Cluster(workdir / "overhead", redis_url, redis_namespace="overhead", claim_idle_s=60, max_wait_ms=50)
    try:
        api, worker = cluster.start("api", "api"), cluster.start("worker", "worker-1")
        api.wait_ready(), worker.wait_ready()
        with server("--model", "tiny", "--device", "cpu", "--no-cache-enabled") as embedded:
            timings: dict[str, list[float]] = {"embedded": [], "distributed": []}
            urls = {"embedded": embedded, "distributed": api.url}
            for i in range(runs + 2):
                for mode, url in urls.items():
                    started = time.perf_counter()
                    job = httpx.post(f"{url}/v1/videos/sync", json={**SMALL, "seed": i}, timeout=120).json()
                    assert job["status"] == "completed", job
                    if i >= 2:  # the first two warm both paths (connections, caches)
                        timings[mode].append(time.perf_counter() - started)
    finally:
        cluster.stop()
    base = median(timings["embedded"])
    return [[mode, f"{median(t) * 1000:.0f}", f"{percentile(t, 95) * 1000:.0f}", f"{median(t) / base:.2f}x",
             f"{(median(t) - base) * 1000:+.0f}"] for mode, t in timings.items()]


def throughput(jobs: int, redis_url: str, workdir: Path, workers: int, threads: int | None) -> float:
    namespace = f"burst{workers}{threads or ''}"
    extra = {"redis_namespace": namespace, "claim_idle_s": 60}
    cluster = Cluster(workdir / namespace, redis_url, **extra)
    if threads is not None:
        cluster.env["OMP_NUM_THREADS"] = str(threads)
    try:
        api = cluster.start("api", "api")
        started = [cluster.start("worker", f"worker-{i}") for i in range(workers)]
        for process in (api, *started):
            process.wait_ready()
        client = httpx.Client(base_url=api.url, timeout=60)
        began = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda i: client.post("/v1/videos", json={"prompt": f"burst {i}", **BURST}).json()["id"],
                                range(jobs)))
        pending = set(ids)
        deadline = time.monotonic() + 600
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if client.get(f"/v1/videos/{i}").json()["status"] != "completed"}
            time.sleep(0.05)
        if pending:
            raise RuntimeError(f"{len(pending)} jobs did not complete")
        return jobs / (time.perf_counter() - began)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--only", choices=["overhead", "throughput"], help="run one part")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        workdir = Path(tmp)
        if args.only != "throughput":
            print_table(
                f"one request, POST /v1/videos/sync ({SMALL['size']}, {SMALL['num_frames']} frames, "
                f"{SMALL['num_inference_steps']} steps), {args.runs} interleaved runs each",
                ["mode", "median ms", "p95 ms", "vs embedded", "added ms"],
                overhead(args.runs, redis_url, workdir),
            )
        if args.only == "overhead":
            return
        rows = []
        results = {}
        for workers, threads in ((1, None), (2, None), (2, 1)):
            rate = throughput(args.jobs, redis_url, workdir, workers, threads)
            results[workers, threads] = rate
            label = f"{workers} worker{'s' if workers > 1 else ''}" + (f", {threads} torch thread each" if threads else "")
            rows.append([label, f"{rate:.2f}", f"{rate / results[1, None]:.2f}x"])
        print_table(f"throughput, {args.jobs} jobs ({BURST['size']}, {BURST['num_frames']} frames, "
                    f"{BURST['num_inference_steps']} steps) through one API", ["workers", "jobs/s", "vs 1 worker"], rows)

if __name__ == "__main__":
    main()
