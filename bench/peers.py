"""reelserve against the servers its users would otherwise run, side by side in one run: a naive
FastAPI + diffusers server (one request at a time) and LitServe with dynamic batching, all serving
the very same pipeline (``bench/peer_servers.py``), one server up at a time, in alternating rounds.

Closed loop: ``--clients`` threads share ``--requests`` unique requests (prompt and seed), each
sending its next one when the last came back; a request is done when its client holds the MP4
(decoded back with PyAV to check its frame count). reelserve is asked through its OpenAI-style API:
``POST /v1/videos/sync`` and then ``GET /v1/videos/{id}/content``, or in one round trip with
``Accept: video/mp4`` (``--one-trip``).

    .venv/bin/python bench/peers.py [--model micro --size 64x64 --frames 17 --steps 25 --guidance 5
                                     --clients 8 --requests 24 --rounds 2 --systems naive,litserve-4,...]

Needs the ``bench`` extra (LitServe): ``.venv/bin/pip install -e '.[bench]'``. Runs on a GPU
unchanged (``--device cuda``).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
from _harness import free_port, machine, micro_prompt, percentile, print_table, server
from peer_servers import add_shape_options

HERE = Path(__file__).resolve().parent


@dataclass
class Round:
    wall_s: float
    latencies: list[float]
    batch_sizes: list[int] = field(default_factory=list)

    def rate(self, requests: int) -> float:
        return requests / self.wall_s


Ask = Callable[[httpx.Client, str, int], tuple[bytes, int | None]]  # -> (mp4, batch size if told)


def ask_peer(client: httpx.Client, prompt: str, seed: int) -> tuple[bytes, int | None]:
    response = client.post("/predict", json={"prompt": prompt, "seed": seed})
    response.raise_for_status()
    return response.content, None


def ask_reelserve(one_trip: bool, shape: dict[str, object]) -> Ask:
    def ask(client: httpx.Client, prompt: str, seed: int) -> tuple[bytes, int | None]:
        body = {"prompt": prompt, "seed": seed, **shape}  # the peers' shape, named: no preset changes it
        if one_trip:
            response = client.post("/v1/videos/sync", json=body, headers={"accept": "video/mp4"})
            response.raise_for_status()
            return response.content, int(response.headers.get("x-reelserve-batch-size", 0)) or None
        job = client.post("/v1/videos/sync", json=body).json()
        assert job["status"] == "completed", job
        content = client.get(f"/v1/videos/{job['id']}/content")
        content.raise_for_status()
        return content.content, job["batch_size"]

    return ask


def frame_count(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for _ in container.decode(video=0))


def run_round(url: str, ask: Ask, clients: int, requests: list[tuple[str, int]], frames: int) -> Round:
    latencies: list[float] = []
    batch_sizes: list[int] = []
    work = iter(requests)

    def client_loop(_: int) -> None:
        with httpx.Client(base_url=url, timeout=900) as client:
            for prompt, seed in work:  # shared iterator: each request is sent once, by one client
                started = time.perf_counter()
                mp4, batch = ask(client, prompt, seed)
                latencies.append(time.perf_counter() - started)
                assert frame_count(mp4) == frames, f"{prompt!r}: not a {frames}-frame MP4"
                if batch is not None:
                    batch_sizes.append(batch)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return Round(time.perf_counter() - started, latencies, batch_sizes)


@contextmanager
def peer(kind: str, shape: list[str], *extra: str, timeout: float = 300) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, str(HERE / "peer_servers.py"), kind, "--port", str(port), *shape, *extra]
    # A session of its own, so its whole group goes at the end: LitServe's inference workers are
    # processes of their own, which a terminate of the server alone would leave running.
    # Its log goes to a file, as reelserve's does (bench/_harness.py): a pipe unread during the run
    # would fill up and block the peer.
    log_file = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log_file.seek(0)
                raise RuntimeError(log_file.read().decode(errors="replace")[-3000:] or f"{kind} died")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        stop_group(process)
        log_file.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process and everything it started, SIGKILL to what is left after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)  # anyone of the group left?
            except ProcessLookupError:
                process.wait(10)
                return
            process.poll()  # reap the leader, so only live members keep the group
            time.sleep(0.1)


def systems(args: argparse.Namespace) -> dict[str, tuple[Callable[[], object], Ask]]:
    shape = ["--model", args.model, "--size", args.size, "--frames", str(args.frames), "--steps", str(args.steps),
             "--guidance", str(args.guidance), "--fps", str(args.fps), "--device", args.device]
    serve = ["--model", args.model, "--device", args.device]
    one_trip = ask_reelserve(args.one_trip, {
        "size": args.size, "num_frames": args.frames, "num_inference_steps": args.steps,
        "guidance_scale": args.guidance, "fps": args.fps,
    })
    table: dict[str, tuple[Callable[[], object], Ask]] = {
        "naive": (lambda: peer("naive", shape), ask_peer),
        "reelserve": (lambda: server(*serve), one_trip),
        "reelserve-quality": (lambda: server(*serve, "--preset", "quality"), one_trip),
        "reelserve-8": (lambda: server(*serve, "--max-batch-size", "8"), one_trip),
    }
    for variant in args.variant:
        name, _, flags = variant.partition("=")
        table[name] = (lambda flags=flags: server(*serve, *shlex.split(flags)), one_trip)
    for batch in (4, 8):
        table[f"litserve-{batch}"] = (
            lambda b=batch: peer("litserve", shape, "--max-batch", str(b), "--window-ms", str(args.window_ms)),
            ask_peer,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    add_shape_options(parser)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-ms", type=float, default=50.0)
    parser.add_argument("--one-trip", action="store_true", help="reelserve answers the sync call with the MP4")
    parser.add_argument("--systems", default="naive,litserve-4,litserve-8,reelserve,reelserve-quality")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="one more reelserve system to name in --systems, served with these flags "
                             "(e.g. 'one-lane=--pipeline-lanes 1 --cpu-threads 2')")
    args = parser.parse_args()
    if args.model != "micro" and args.size == "64x64":
        args.size = "128x128"
    table = systems(args)
    chosen = args.systems.split(",")
    unknown = set(chosen) - set(table)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {sorted(table)}")

    results: dict[str, list[Round]] = {name: [] for name in chosen}
    for round_index in range(args.rounds):
        order = chosen if round_index % 2 == 0 else list(reversed(chosen))  # alternate: neither goes first twice
        for name in order:
            start, ask = table[name]
            # Unique per round too: a result cache (reelserve's, on by default) never answers.
            requests = [
                (micro_prompt(i), 1000 * round_index + i)
                for i in range(args.requests)
            ]
            with start() as url, httpx.Client(base_url=url, timeout=900) as warm:  # type: ignore[attr-defined]
                ask(warm, "warm-up request", 10**6 + round_index)
                results[name].append(run_round(url, ask, args.clients, requests, args.frames))
            print(f"round {round_index + 1} {name}: {args.requests / results[name][-1].wall_s:.2f} videos/s",
                  file=sys.stderr)

    base = sum(r.rate(args.requests) for r in results[chosen[0]]) / args.rounds
    rows = []
    for name in chosen:
        rounds = results[name]
        rates = [r.rate(args.requests) for r in rounds]
        sizes = [size for r in rounds for size in r.batch_sizes]
        rows.append([
            name, " / ".join(f"{rate:.2f}" for rate in rates), f"{sum(rates) / len(rates) / base:.2f}",
            " / ".join(f"{percentile(r.latencies, 95):.1f}" for r in rounds),
            f"{sum(sizes) / len(sizes):.1f}" if sizes else "-",
        ])
    print_table(
        f"Peers, {args.model} {args.size} x{args.frames} frames, {args.steps} steps, guidance {args.guidance}; "
        f"{args.clients} closed-loop clients x {args.requests} unique requests, {args.rounds} alternating rounds, "
        f"each client receiving the MP4{' (reelserve: one trip)' if args.one_trip else ''}\n{machine()}",
        ["system", "videos/s (rounds)", f"vs {chosen[0]}", "p95 s (rounds)", "mean batch"], rows,
    )


if __name__ == "__main__":
    main()
