"""Continuous batching and preemption, each on vs off.

``--scenario join`` (the default): jobs that arrive one after another, while earlier ones run.

Job i is sent at ``i * gap`` seconds (through the sync endpoint, each from its own client thread),
alternating ``--steps`` and ``--short-steps``, so without joining a job that arrives a moment after
a batch started waits for the whole batch, and with it the job joins at the next step and leaves
when its own steps are done. Both servers are the same build with the same flags but
``--continuous-batching`` / ``--no-continuous-batching``, run one after the other in this process.

    .venv/bin/python bench/step_scheduling.py [--jobs 12 --gap 0.15 --rounds 2 --lanes 1]

``--scenario preempt``: ``--jobs`` batch-tier jobs of ``--steps`` are sent at once; once the batch
runs (its first progress), one realtime job of another shape (``--urgent-size``, ``--short-steps``)
follows. With ``--preemption`` the batch makes way at its next step; with ``--no-preemption`` the
realtime job waits for it. Reports the realtime job's latency and when the batch-tier jobs end.

    .venv/bin/python bench/step_scheduling.py --scenario preempt [--jobs 4 --steps 50 --rounds 3]

``--scenario poisson``: open-loop Poisson arrivals at ``--loads`` (fractions of the capacity measured
first, on the whole-request server, with a closed burst of the mix) of a mix of step counts (10/25/50)
and tiers (realtime 0.2, standard 0.5, batch 0.3), the same seeded arrivals sent to a server with step
scheduling (continuous batching and preemption) and one without (whole-request batching), one after
the other. Reports p50/p95 end to end per tier and throughput. Then realtime under a batch-tier flood:
``--flood`` batch-tier jobs of 50 steps at once, and realtime jobs one after another while they run,
against the same realtime jobs on the idle server.

    .venv/bin/python bench/step_scheduling.py --scenario poisson [--loads 0.5,0.8,0.95 --arrivals 24]
"""

from __future__ import annotations

import argparse
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from _harness import machine, median, micro_prompt, percentile, print_table, server, settle


def send_staggered(url: str, jobs: int, gap: float, bodies: list[dict]) -> tuple[float, list[float], list[float]]:
    """Send job i at i * gap; returns (makespan, latency of each job, latency of each short job)."""
    latencies: dict[int, float] = {}
    start = threading.Event()
    began = 0.0

    def client(index: int) -> None:
        start.wait()
        delay = began + index * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the arrival schedule, not synchronisation
        sent = time.perf_counter()
        with httpx.Client(base_url=url, timeout=600) as http:
            job = http.post("/v1/videos/sync", json=bodies[index]).json()
        assert job["status"] == "completed", job
        latencies[index] = time.perf_counter() - sent

    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(client, i) for i in range(jobs)]
        began = time.perf_counter()
        start.set()
        for future in futures:
            future.result()
    makespan = time.perf_counter() - began
    ordered = [latencies[i] for i in range(jobs)]
    return makespan, ordered, ordered[1::2]


def joined_rows(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=30).text
    match = re.search(r"^reelserve_joined_rows_total (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def preempt_once(url: str, jobs: int, steps: int, urgent: dict) -> tuple[float, float]:
    """Returns (the realtime job's latency, seconds until the last batch-tier job ended)."""
    with httpx.Client(base_url=url, timeout=600) as http:
        began = time.perf_counter()
        ids = [http.post("/v1/videos", json={"prompt": micro_prompt(i), "seed": i, "num_inference_steps": steps,
                                             "priority": "batch"}).json()["id"] for i in range(jobs)]
        with http.stream("GET", f"/v1/videos/{ids[0]}/events") as events:
            for line in events.iter_lines():
                if line.startswith("event:") and "progress" in line:
                    break  # the batch is running
        sent = time.perf_counter()
        done = http.post("/v1/videos/sync", json=urgent).json()
        assert done["status"] == "completed", done
        urgent_s = time.perf_counter() - sent
        for job_id in ids:
            with http.stream("GET", f"/v1/videos/{job_id}/events") as events:
                for _ in events.iter_lines():
                    pass  # the server ends a video's stream once it is final
            assert http.get(f"/v1/videos/{job_id}").json()["status"] == "completed"
        return urgent_s, time.perf_counter() - began


def main_preempt(args: argparse.Namespace, lanes: list[str]) -> None:
    urgent = {"prompt": micro_prompt(50), "seed": 50, "size": args.urgent_size, "num_inference_steps": args.short_steps,
              "priority": "realtime"}
    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for _ in range(args.rounds):
        for label in ("off", "on"):
            flag = "--preemption" if label == "on" else "--no-preemption"
            with server("--model", args.model, "--device", args.device, flag, "--no-cache-enabled", *lanes) as url:
                httpx.post(url + "/v1/videos/sync", json={**urgent, "seed": 999}, timeout=600)  # first-request costs
                httpx.post(url + "/v1/videos/sync", json={"prompt": micro_prompt(1), "seed": 998}, timeout=600)
                settle()
                results[label].append(preempt_once(url, args.jobs, args.steps, urgent))
    rows = [[f"preemption {label}", f"{median([u for u, _ in runs]):.2f}", f"{max(u for u, _ in runs):.2f}",
             f"{median([b for _, b in runs]):.2f}"] for label, runs in results.items()]
    title = (f"{machine()}; {args.model}, {args.jobs} batch-tier jobs of {args.steps} steps, then one realtime "
             f"{args.urgent_size} job of {args.short_steps} steps; lanes {args.lanes}, {args.rounds} rounds")
    print_table(title, ["", "realtime latency s (median)", "max", "batch-tier jobs done s (median)"], rows)


TIER_MIX = {"realtime": 0.2, "standard": 0.5, "batch": 0.3}
STEP_MIX = (10, 25, 50)
WHOLE_REQUEST = ("--no-continuous-batching", "--no-preemption")
STEP_LEVEL = ("--continuous-batching", "--preemption")


def poisson_bodies(rate: float, count: int, seed: int) -> list[tuple[float, dict]]:
    """(arrival second, body) of ``count`` seeded Poisson arrivals at ``rate`` a second."""
    rng, at, arrivals = random.Random(seed), 0.0, []
    for i in range(count):
        at += rng.expovariate(rate)
        tier = rng.choices(list(TIER_MIX), weights=list(TIER_MIX.values()))[0]
        arrivals.append((at, {"prompt": micro_prompt(i), "seed": i, "num_inference_steps": rng.choice(STEP_MIX),
                              "priority": tier}))
    return arrivals


def send_open_loop(url: str, arrivals: list[tuple[float, dict]]) -> tuple[dict[str, list[float]], float, int]:
    """Each body sent at its second (sync endpoint, own thread). Returns (latencies by tier, seconds from
    the first arrival to the last completion, refused)."""
    latencies: dict[str, list[float]] = {tier: [] for tier in TIER_MIX}
    refused, ends = [0], []
    lock, start = threading.Lock(), threading.Event()
    began = 0.0

    def client(at: float, body: dict) -> None:
        start.wait()
        delay = began + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the arrival schedule, not synchronisation
        sent = time.perf_counter()
        with httpx.Client(base_url=url, timeout=900) as http:
            answer = http.post("/v1/videos/sync", json=body)
        with lock:
            if answer.status_code != 200 or answer.json()["status"] != "completed":
                refused[0] += 1
                return
            latencies[body["priority"]].append(time.perf_counter() - sent)
            ends.append(time.perf_counter())

    with ThreadPoolExecutor(len(arrivals)) as pool:
        futures = [pool.submit(client, at, body) for at, body in arrivals]
        began = time.perf_counter()
        start.set()
        for future in futures:
            future.result()
    return latencies, max(ends) - began, refused[0]


def burst_capacity(url: str, jobs: int) -> float:
    """Jobs a second of a closed burst of the mix (every step count, standard tier), all sent at once."""
    bodies = [{"prompt": micro_prompt(i), "seed": 500 + i, "num_inference_steps": STEP_MIX[i % len(STEP_MIX)]}
              for i in range(jobs)]
    latencies, span, refused = send_open_loop(url, [(0.0, {**b, "priority": "standard"}) for b in bodies])
    assert refused == 0
    return jobs / span


def realtime_flood(url: str, flood: int, probes: int) -> tuple[list[float], list[float]]:
    """Realtime latencies on the idle server, then while ``flood`` batch-tier jobs of 50 steps run."""
    realtime = [{"prompt": micro_prompt(60 + i), "seed": 60 + i, "num_inference_steps": 25, "priority": "realtime"}
                for i in range(probes)]
    with httpx.Client(base_url=url, timeout=900) as http:
        idle = []
        for body in realtime:
            sent = time.perf_counter()
            assert http.post("/v1/videos/sync", json=body).json()["status"] == "completed"
            idle.append(time.perf_counter() - sent)
        ids = [http.post("/v1/videos", json={"prompt": micro_prompt(i), "seed": 300 + i, "num_inference_steps": 50,
                                             "priority": "batch"}).json()["id"] for i in range(flood)]
        flooded = []
        for body in realtime:
            sent = time.perf_counter()
            answer = http.post("/v1/videos/sync", json={**body, "seed": body["seed"] + 100})
            if answer.status_code == 200 and answer.json()["status"] == "completed":
                flooded.append(time.perf_counter() - sent)
            else:  # refused (its deadline could not be met): shown as missing latencies
                print(f"realtime job under the flood: {answer.status_code} {answer.text[:200]}")
        for job_id in ids:  # the flood ends before the server does
            with http.stream("GET", f"/v1/videos/{job_id}/events") as events:
                for _ in events.iter_lines():
                    pass
    return idle, flooded


def main_poisson(args: argparse.Namespace, lanes: list[str]) -> None:
    common = ("--model", args.model, "--device", args.device, "--no-cache-enabled", *lanes)
    warm = {"prompt": micro_prompt(71), "seed": 999, "num_inference_steps": 10}
    with server(*common, *WHOLE_REQUEST) as url:
        httpx.post(url + "/v1/videos/sync", json=warm, timeout=600)
        settle()
        capacity = burst_capacity(url, args.capacity_jobs)
    rows = []
    for load in (float(x) for x in args.loads.split(",")):
        arrivals = poisson_bodies(load * capacity, args.arrivals, seed=int(load * 100))
        for label, flags in (("whole-request", WHOLE_REQUEST), ("step-level", STEP_LEVEL)):
            with server(*common, *flags) as url:
                httpx.post(url + "/v1/videos/sync", json=warm, timeout=600)
                settle()
                latencies, span, refused = send_open_loop(url, arrivals)
            done = sum(len(v) for v in latencies.values())
            rows.append([f"{load:.2f}", label, *[f"{median(latencies[t]):.2f} / {percentile(latencies[t], 95):.2f}"
                                                  if latencies[t] else "–" for t in TIER_MIX],
                         f"{done / span:.3f}", str(refused)])
    title = (f"{machine()}; {args.model}, capacity {capacity:.3f} jobs/s (closed burst of {args.capacity_jobs}, "
             f"whole-request), {args.arrivals} Poisson arrivals a load, steps {'/'.join(map(str, STEP_MIX))}, "
             f"tiers {TIER_MIX}, lanes {args.lanes}")
    print_table(title, ["load", "batching", *[f"{t} p50 / p95 s" for t in TIER_MIX], "done/s", "refused"], rows)
    flood_rows = []
    for label, flags in (("whole-request", WHOLE_REQUEST), ("step-level", STEP_LEVEL)):
        with server(*common, *flags) as url:
            httpx.post(url + "/v1/videos/sync", json=warm, timeout=600)
            settle()
            idle, flooded = realtime_flood(url, args.flood, args.probes)
        flood_rows.append([label, f"{percentile(idle, 95):.2f}", f"{percentile(flooded, 95):.2f}",
                           f"{percentile(flooded, 95) / percentile(idle, 95):.2f}"])
    print_table(f"{machine()}; realtime jobs of 25 steps, {args.probes} one after another, idle vs under a flood of "
                f"{args.flood} batch-tier jobs of 50 steps", ["batching", "idle p95 s", "flooded p95 s", "ratio"],
                flood_rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["join", "preempt", "poisson"], default="join")
    parser.add_argument("--loads", default="0.5,0.8,0.95", help="poisson: fractions of the measured capacity")
    parser.add_argument("--arrivals", type=int, default=24, help="poisson: arrivals a load")
    parser.add_argument("--capacity-jobs", type=int, default=12, help="poisson: the capacity burst's jobs")
    parser.add_argument("--flood", type=int, default=12, help="poisson: batch-tier jobs of the flood")
    parser.add_argument("--probes", type=int, default=4, help="poisson: realtime jobs, idle and flooded")
    parser.add_argument("--urgent-size", default="96x96", help="preempt: the realtime job's size")
    parser.add_argument("--model", default="micro")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--gap", type=float, default=0.15, help="seconds between arrivals")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--short-steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternating on/off server pairs")
    parser.add_argument("--lanes", default="1", help="--pipeline-lanes for both servers ('auto': tuned)")
    args = parser.parse_args()
    lanes = [] if args.lanes == "auto" else ["--pipeline-lanes", args.lanes]
    if args.scenario == "preempt":
        main_preempt(args, lanes)
        return
    if args.scenario == "poisson":
        main_poisson(args, lanes)
        return
    bodies = [{"prompt": micro_prompt(i), "seed": i, "num_inference_steps": args.short_steps if i % 2 else args.steps}
              for i in range(args.jobs)]
    results: dict[str, list[tuple[float, list[float], list[float], int]]] = {"on": [], "off": []}
    for _ in range(args.rounds):
        for label in ("off", "on"):
            flag = "--continuous-batching" if label == "on" else "--no-continuous-batching"
            with server("--model", args.model, "--device", args.device, flag, "--no-cache-enabled", *lanes) as url:
                httpx.post(url + "/v1/videos/sync", json={**bodies[0], "seed": 999}, timeout=600)  # first-request costs
                settle()
                makespan, latencies, short = send_staggered(url, args.jobs, args.gap, bodies)
                results[label].append((makespan, latencies, short, joined_rows(url)))

    rows = []
    for label, runs in results.items():
        latencies = [x for _, lat, _, _ in runs for x in lat]
        short = [x for _, _, s, _ in runs for x in s]
        rows.append([
            f"continuous batching {label}", f"{median([m for m, _, _, _ in runs]):.2f}",
            f"{median(latencies):.2f}", f"{percentile(latencies, 90):.2f}", f"{max(latencies):.2f}",
            f"{median(short):.2f}", f"{sum(j for *_, j in runs) / len(runs):.1f}",
        ])
    title = (f"{machine()}; {args.model}, {args.jobs} jobs {args.gap} s apart, {args.steps}/{args.short_steps} "
             f"steps alternating, lanes {args.lanes}, {args.rounds} rounds")
    print_table(title, ["", "makespan s (median)", "latency p50", "p90", "max", "short jobs p50", "joined rows/round"], rows)


if __name__ == "__main__":
    main()
