"""Crash trials of the distributed mode: one ``reelserve api`` and two ``reelserve worker`` processes on
a private Redis (AOF, fsync always); each trial submits jobs with webhooks, kill -9s the worker holding
a running job mid-batch, waits for every job to end, counts lost and doubly completed jobs and webhook
deliveries per job, then starts a replacement worker. With ``--checkpoint-steps 0,10`` the trials
run once per value, each on a fresh cluster, and count the denoising steps the reclaiming worker did
not run again (``reelserve_resumed_steps_total`` of the live workers).

    .venv/bin/python bench/crash_trials.py [--trials 10] [--jobs 6] [--checkpoint-steps 0,10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _harness import machine, print_table
from cluster import Cluster
from support import Receiver, RedisServer

from reelserve.webhooks import generate_secret

LONG = {"size": "256x256", "num_frames": 17, "num_inference_steps": 50}


def wait_for(predicate, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    return None


def resumed_steps(workers: dict) -> float:  # type: ignore[type-arg]
    return sum(process.metric("reelserve_resumed_steps_total") for process in workers.values())


def run_trials(args: argparse.Namespace, checkpoint_steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = RedisServer(workdir / "redis", appendonly=True)
        store.start()
        receiver = Receiver()
        receiver.thread.start()
        cluster = Cluster(workdir, store.url, webhook_secret=generate_secret(), webhook_allow="127.0.0.0/8",
                          max_batch_size=4, checkpoint_steps=checkpoint_steps)
        inspect = redis.Redis.from_url(store.url, decode_responses=True)
        rows, totals = [], Counter()
        try:
            api = cluster.start("api", "api")
            workers = {name: cluster.start("worker", name) for name in ("worker-1", "worker-2")}
            for process in (api, *workers.values()):
                process.wait_ready()
            client = httpx.Client(base_url=api.url, timeout=30)
            for trial in range(1, args.trials + 1):
                receiver.requests.clear()
                ids = [client.post("/v1/videos", json={"prompt": f"trial {trial} job {i}", **LONG,
                                                       "webhook_url": receiver.url}).json()["id"]
                       for i in range(args.jobs)]
                running = wait_for(lambda ids=ids: next(
                    (i for i in ids if client.get(f"/v1/videos/{i}").json()["progress"] >= 40), None), 120)
                victim = cluster.holder(running) if running else None
                killed_at = time.perf_counter()
                workers[victim].kill()
                survivors = {name: process for name, process in workers.items() if name != victim}
                resumed_before = resumed_steps(survivors)
                final = {}
                for job_id in ids:
                    job = wait_for(lambda j=job_id: (v := client.get(f"/v1/videos/{j}").json())["status"]
                                   in ("completed", "failed", "cancelled") and v, 300)
                    final[job_id] = job
                recovered_s = time.perf_counter() - killed_at
                saved = resumed_steps(survivors) - resumed_before
                wait_for(lambda ids=ids: all(
                    client.get(f"/v1/videos/{i}").json()["webhook"]["status"] != "pending" for i in ids), 60)
                completions = Counter()
                for job_id in ids:
                    log = [json.loads(raw) for raw in inspect.lrange(cluster.keys.transitions(job_id), 0, -1)]
                    completions[job_id] = sum(1 for entry in log if entry["to"] == "completed")
                deliveries = Counter(json.loads(r.body)["data"]["id"] for r in receiver.requests)
                lost = sum(1 for job in final.values() if not job or job["status"] != "completed")
                doubled = sum(1 for n in completions.values() if n > 1)
                hooks_off = sum(1 for job_id in ids if deliveries[job_id] != 1)
                rerun = sum(1 for job in final.values() if job and job["attempts"] > 1)
                totals.update(lost=lost, doubled=doubled, hooks_off=hooks_off, rerun=rerun, jobs=len(ids),
                              saved=int(saved))
                rows.append([str(trial), victim, str(rerun), str(int(saved)), str(lost), str(doubled), str(hooks_off),
                             f"{recovered_s:.1f}"])
                workers[victim] = cluster.start("worker", victim)
                workers[victim].wait_ready()
        finally:
            cluster.stop()
            receiver.stop()
            inspect.close()
            store.stop()
    print_table(
        f"kill -9 of a worker mid-batch (its running job at least 40 % done), {args.trials} trials x {args.jobs} jobs "
        f"({LONG['size']}, {LONG['num_frames']} frames, {LONG['num_inference_steps']} steps), claim idle 1.5 s, "
        f"checkpoint every {checkpoint_steps or 'never'} steps",
        ["trial", "killed", "jobs rerun", "steps not run again", "lost", "completed twice", "webhooks != 1",
         "all done after s"],
        rows,
    )
    print(f"total: {totals['jobs']} jobs, {totals['rerun']} rerun after a kill, {totals['saved']} steps not run "
          f"again, {totals['lost']} lost, {totals['doubled']} completed twice, {totals['hooks_off']} with other than "
          "one webhook delivery")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--checkpoint-steps", default="0", help="comma-separated; one set of trials per value")
    args = parser.parse_args()
    print(machine())
    for steps in (int(value) for value in args.checkpoint_steps.split(",")):
        run_trials(args, steps)


if __name__ == "__main__":
    main()
