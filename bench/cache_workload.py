"""Result cache under a Zipf workload: the same request sequence against a server with the cache on
(L1 + Redis L2, private redis-server) and one with ``--no-cache-enabled``, same model and settings.

Prompts are drawn from a Zipf distribution over a pool sized so that about ``--repeat-target`` of
the requests repeat an earlier one; every request has the same seed, so a repeat is an exact cache
key match. ``--concurrency`` client threads send the sequence in order through the sync endpoint.
A repeat that arrives while its first copy is still running is a miss (nothing coalesces in-flight
duplicates), so the hit fraction is below the repeat fraction.

    .venv/bin/python bench/cache_workload.py [--requests 200 --concurrency 4 --size 64x64 --frames 17 --steps 10]
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
from _harness import machine, percentile, print_table, redis_server, server
from prometheus_client.parser import text_string_to_metric_families

COLOURS = ("red", "blue", "green", "yellow", "white", "purple", "orange", "pink")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "spinning", "bouncing")
MAX_POOL = 2000


@dataclass
class Result:
    latency_s: float
    cached: bool


@dataclass
class Run:
    wall_s: float
    results: list[Result]
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]  # deltas over the workload


def prompt_pool(size: int) -> list[str]:
    combos = [f"a {c} {s} {m}" for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)]
    return [combos[i % len(combos)] + (f", take {i // len(combos)}" if i >= len(combos) else "") for i in range(size)]


def zipf_workload(requests: int, repeat_target: float, exponent: float, seed: int) -> tuple[list[int], int]:
    """Zipf ranks (0 is the most popular) for ``requests`` draws, and the pool size, chosen from
    1..MAX_POOL so the fraction of draws that repeat an earlier one is closest to ``repeat_target``.
    The uniforms are fixed by ``seed``, so the sequence is the same in every run."""
    uniforms = np.random.default_rng(seed).random(requests)
    best: tuple[float, list[int], int] | None = None
    for pool in range(1, MAX_POOL + 1):
        weights = 1.0 / np.arange(1, pool + 1) ** exponent
        ranks = np.searchsorted(np.cumsum(weights) / weights.sum(), uniforms).tolist()
        error = abs((requests - len(set(ranks))) / requests - repeat_target)
        if best is None or error < best[0]:
            best = (error, ranks, pool)
    assert best is not None
    return best[1], best[2]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run_workload(url: str, bodies: list[dict], concurrency: int) -> Run:
    """Send ``bodies`` in order from ``concurrency`` threads, each POST waiting for its final job."""
    results: list[Result | None] = [None] * len(bodies)
    order = iter(range(len(bodies)))
    lock = threading.Lock()

    def client_loop(_: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            while True:
                with lock:
                    index = next(order, None)
                if index is None:
                    return
                started = time.perf_counter()
                job = client.post("/v1/videos/sync", json=bodies[index]).json()
                latency = time.perf_counter() - started
                assert job["status"] == "completed", job
                results[index] = Result(latency, bool(job.get("cached")))

    before = scrape(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client_loop, range(concurrency)))
    wall = time.perf_counter() - started
    after = scrape(url)
    deltas = {name: value - before.get(name, 0.0) for name, value in after.items()}
    return Run(wall, [r for r in results if r is not None], deltas)


def metric(run: Run, name: str, **labels: str) -> float:
    return run.metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat-target", type=float, default=0.6)
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent")
    parser.add_argument("--model", default="micro")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seeds the workload draw")
    args = parser.parse_args()

    ranks, pool_size = zipf_workload(args.requests, args.repeat_target, args.zipf, args.seed)
    pool = prompt_pool(pool_size)
    common = {"size": args.size, "num_frames": args.frames, "num_inference_steps": args.steps, "seed": 7}
    bodies = [{"prompt": pool[rank], **common} for rank in ranks]
    repeats = args.requests - len(set(ranks))
    warm_up = {"prompt": "a grey dot standing still", **common, "seed": 999}  # outside the workload
    flags = ("--model", args.model, "--device", "cpu", "--warmup-runs", "1", "--max-batch-size",
             str(args.concurrency), "--max-wait-ms", "50")

    runs: dict[str, Run] = {}
    with server(*flags, "--no-cache-enabled") as url:
        httpx.post(url + "/v1/videos/sync", json=warm_up, timeout=600)  # first-request costs
        runs["cache off (--no-cache-enabled)"] = run_workload(url, bodies, args.concurrency)
    with redis_server() as redis_url, server(*flags, "--redis-url", redis_url) as url:
        httpx.post(url + "/v1/videos/sync", json=warm_up, timeout=600)
        runs["cache on (L1 + Redis L2, bloom)"] = run_workload(url, bodies, args.concurrency)

    off_rate = args.requests / next(iter(runs.values())).wall_s
    rows = []
    for label, run in runs.items():
        hits = [r.latency_s * 1000 for r in run.results if r.cached]
        misses = [r.latency_s * 1000 for r in run.results if not r.cached]
        rate = args.requests / run.wall_s
        model_s = metric(run, "reelserve_inference_seconds_sum")
        rows.append([
            label, f"{run.wall_s:.1f}", f"{rate:.2f}", f"{rate / off_rate:.2f}",
            f"{model_s / args.requests * 1000:.0f}", f"{metric(run, 'reelserve_inference_seconds_count'):.0f}",
            f"{len(hits)}", f"{percentile(hits, 50):.1f}", f"{percentile(hits, 99):.1f}",
            f"{percentile(misses, 50):.0f}",
        ])
    print_table(
        f"Result cache, {args.requests} requests (Zipf s={args.zipf}, pool {pool_size} prompts, "
        f"{repeats / args.requests:.1%} repeats), {args.concurrency} concurrent clients, {args.model} {args.size} "
        f"x{args.frames} frames, {args.steps} steps\n{machine()}",
        ["mode", "wall s", "req/s", "ratio to off", "model-s per 1000 req", "pipeline calls", "hits",
         "hit p50 ms", "hit p99 ms", "miss p50 ms"], rows,
    )

    cached = runs["cache on (L1 + Redis L2, bloom)"]
    print_table(
        "Cache lookups in the cache-on run (reelserve_cache_requests_total, bloom negatives)",
        ["l1 hit", "l1 miss", "bloom negatives", "l2 hit", "l2 miss"],
        [[f"{metric(cached, 'reelserve_cache_requests_total', level=level, result=result):.0f}"
          for level, result in (("l1", "hit"), ("l1", "miss"))]
         + [f"{metric(cached, 'reelserve_cache_bloom_negatives_total'):.0f}"]
         + [f"{metric(cached, 'reelserve_cache_requests_total', level='l2', result=result):.0f}"
            for result in ("hit", "miss")]],
    )


if __name__ == "__main__":
    main()
