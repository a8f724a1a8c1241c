"""A long schemathesis run against a real server (tiny model, two API keys and an admin key): every
operation, every check, a fixed seed. Prints the cases generated and failed per run, the 5xx series in
/metrics afterwards, and the final states of every job the fuzzer got accepted.

Run: .venv/bin/python bench/fuzz.py --cases 1200   (cases per operation; about 15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, print_table, server_process  # noqa: E402

CONFIG = Path(__file__).parents[1] / "tests" / "api" / "schemathesis.toml"
ALICE, BOB, ADMIN = "fuzz-alice", "fuzz-bob", "fuzz-admin"


def run(url: str, key: str, cases: int, seed: int, workdir: Path, *extra: str) -> tuple[list[str], str]:
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(CONFIG), "--no-color", "run", f"{url}/openapi.json", "--checks", "all",
               "--seed", str(seed), "--max-examples", str(cases), "--workers", "2", "--request-timeout", "60",
               "-H", f"Authorization: Bearer {key}", "--report-dir", str(workdir), *extra]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    tail = result.stdout[-4000:]
    generated = re.search(r"(\d+) generated(?:, (\d+) found)?", tail)
    selected = re.search(r"Selected: (\d+)/(\d+)", tail)
    failures = re.findall(r"❌ (ST\d+ [^:]+): (\d+)", tail)
    row = [
        "tenant key" if key == ALICE else "admin key, /v1/admin only",
        f"{selected.group(1)}/{selected.group(2)}" if selected else "?",
        generated.group(1) if generated else "?",
        ", ".join(f"{name}: {count}" for name, count in failures) or "0",
        str(result.returncode),
        f"{time.monotonic() - started:.0f}",
    ]
    return row, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1200, help="cases per operation")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        keys.write_text(f"{ALICE}\n{BOB}\n")
        flags = ("--model", "tiny", "--device", "cpu", "--warmup-runs", "0", "--api-keys-file", str(keys),
                 "--admin-keys", ADMIN)
        with server_process(*flags, timeout=120) as running:
            tenant, tenant_tail = run(running.url, ALICE, args.cases, args.seed, Path(tmp) / "tenant")
            admin, admin_tail = run(running.url, ADMIN, args.cases, args.seed, Path(tmp) / "admin",
                                    "--include-path-regex", "^/v1/admin/", "--phases", "examples,coverage,fuzzing")
            metrics = httpx.get(running.url + "/metrics").text
            # /readyz answers 503 while the harness waits for the model: documented, and not the fuzzer's.
            server_errors = [line for line in metrics.splitlines()
                             if re.search(r'status="5\d\d"', line) and 'route="/readyz"' not in line]
            final = final_states(running.url)
    print_table(f"Schemathesis, --checks all, seed {args.seed}, {args.cases} cases per operation ({machine()})",
                ["run", "operations", "cases", "failures", "exit", "seconds"], [tenant, admin])
    print(f"5xx series in /metrics: {len(server_errors)} {server_errors[:5]}")
    print(f"jobs: {final}")
    for tail in (tenant_tail, admin_tail):
        if "failures" in tail.splitlines()[-1]:
            print(tail)


def final_states(url: str, timeout: float = 600) -> str:
    """Every job the fuzzer created, once each is final (or what is left when the timeout passes)."""
    headers = {"authorization": f"Bearer {ADMIN}"}
    deadline = time.monotonic() + timeout
    while True:
        jobs, after = [], None
        while True:
            page = httpx.get(url + "/v1/videos", params={"limit": 100, **({"after": after} if after else {})},
                             headers=headers, timeout=60).json()
            jobs += page["data"]
            if not page["has_more"]:
                break
            after = page["last_id"]
        statuses = [job["status"] for job in jobs]
        unfinished = sum(s in ("queued", "in_progress") for s in statuses)
        if not unfinished or time.monotonic() > deadline:
            counts = {s: statuses.count(s) for s in sorted(set(statuses))}
            return f"{len(jobs)} accepted, {counts}, unfinished {unfinished}"
        time.sleep(2.0)


if __name__ == "__main__":
    main()
