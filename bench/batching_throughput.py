"""Throughput with N concurrent clients, dynamic batching on vs off, same server and settings.

Each client sends its requests one after another through the sync endpoint, so N requests are
in flight at once. Batching off is ``--max-batch-size 1``.

    .venv/bin/python bench/batching_throughput.py [--clients 8 --per-client 3]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from _harness import machine, median, print_table, server


def run_load(url: str, clients: int, per_client: int, body: dict) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    batch_sizes: list[int] = []

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            for n in range(per_client):
                started = time.perf_counter()
                job = client.post("/v1/videos/sync", json={**body, "seed": index * 100 + n}).json()
                assert job["status"] == "completed", job
                latencies.append(time.perf_counter() - started)
                batch_sizes.append(job["batch_size"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return time.perf_counter() - started, latencies, batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=3)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    body = {"prompt": "a fox in the snow", "size": args.size, "num_frames": args.frames,
            "num_inference_steps": args.steps}
    total = args.clients * args.per_client

    results = {}
    for label, batch in (("batching off (max_batch_size 1)", 1), (f"batching on (max_batch_size {args.clients})",
                                                                  args.clients)):
        with server("--model", "tiny", "--device", "cpu", "--max-batch-size", str(batch), "--max-wait-ms", "50",
                    "--warmup-runs", "2", "--no-cache-enabled") as url:  # measure batching, not the cache
            httpx.post(url + "/v1/videos/sync", json=body, timeout=600)  # first-request costs
            results[label] = run_load(url, args.clients, args.per_client, body)

    off = total / next(iter(results.values()))[0]
    rows = []
    for label, (elapsed, latencies, sizes) in results.items():
        rate = total / elapsed
        rows.append([label, f"{elapsed:.1f}", f"{rate:.2f}", f"{rate / off:.2f}", f"{median(latencies):.2f}",
                     f"{sum(sizes) / len(sizes):.1f}"])
    print_table(
        f"Throughput, {args.clients} concurrent clients x {args.per_client} requests, tiny {args.size} "
        f"x{args.frames} frames, {args.steps} steps\n{machine()}",
        ["mode", "wall s", "videos/s", "ratio to off", "median latency s", "mean batch"], rows,
    )


if __name__ == "__main__":
    main()
