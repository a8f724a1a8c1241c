"""`reelserve generate` against a server request on an idle machine and beside one busy core.

The same request (micro model defaults, one seed) runs three ways: `reelserve generate` as shipped
(libgomp's own wait policy, the cores idle at its start), `reelserve generate` as it was before
(OMP_WAIT_POLICY=PASSIVE, every core), and a running server's /v1/videos/sync.
The busy core is a plain Python spin loop, bounded in time. Each cell is the median inference time of
``--repeats`` runs, as each path reports it (`inference_s` on the CLI line, `timings.inference_s` on
the video object).

Run: .venv/bin/python bench/busy_machine.py   (about three minutes on 2 cores)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import typer

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, median, micro_prompt, print_table, server, settle  # noqa: E402

# Every run gets a prompt of its own (micro_prompt(seed)): a server keeps the text encoder's outputs for
# prompts it has seen, and a fresh `generate` process has seen none.
CLI = [sys.executable, "-m", "reelserve"]
CORES = len(os.sched_getaffinity(0))
# (label, environment, extra flags): as shipped, and as before (passive waiting on every core).
GENERATES = (
    ("generate", {}, []),
    ("generate, passive wait, every core (before)", {"OMP_WAIT_POLICY": "PASSIVE"}, ["--cpu-threads", str(CORES)]),
)


@contextmanager
def busy_core(seconds: float) -> Iterator[None]:
    """One core kept busy by another process for at most ``seconds``."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    process = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        process.kill()
        process.wait(10)


def generate_s(extra_env: dict[str, str], flags: list[str], seed: int, out: Path) -> float:
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}, **extra_env}
    result = subprocess.run([*CLI, "generate", micro_prompt(seed), "--seed", str(seed), "-o", str(out), *flags],
                            capture_output=True, text=True, env=env, timeout=300, check=True)
    return float(re.search(r"inference_s=([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]


def server_s(url: str, seed: int) -> float:
    settle()  # the last `generate` process out of the server's load sample, as it would be between users
    sync = httpx.post(url + "/v1/videos/sync", json={"prompt": micro_prompt(seed), "seed": seed}, timeout=300)
    sync.raise_for_status()
    return sync.json()["timings"]["inference_s"]


def main(repeats: int = typer.Option(3, min=1, max=10, help="Runs per cell (median shown).")) -> None:
    out = Path("/tmp/reelserve-busy-machine.mp4")
    rows = []
    with server() as url:
        server_s(url, 0)  # the first request after warm-up pays one-off allocations
        for row, (label, busy) in enumerate((("idle", nullcontext), ("one core busy", lambda: busy_core(600)))):
            seeds = range(100 * (row + 1), 100 * (row + 1) + repeats)  # new seeds: no result-cache hits
            with busy():
                cells = [median([generate_s(env, flags, seed, out) for seed in seeds]) for _, env, flags in GENERATES]
                cells.append(median([server_s(url, seed) for seed in seeds]))
            rows.append([label, *(f"{c:.2f}" for c in cells), f"{cells[0] / cells[-1]:.2f}"])
    print(f"machine: {machine()}")
    print_table("Inference seconds, micro defaults (64x64, 17 frames, 25 steps), median of "
                f"{repeats}", ["machine", *(label for label, _, _ in GENERATES), "server", "generate / server"], rows)


if __name__ == "__main__":
    typer.run(main)
