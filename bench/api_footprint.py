"""The distributed API role's footprint: seconds from process start to ``/readyz``, and resident
memory once ready and after serving requests, for ``reelserve api`` on a private Redis. The API is
the front only (no model), so what it imports decides both: run this against two checkouts (the
``PYTHONPATH`` of the server process picks the code) to compare.

    .venv/bin/python bench/api_footprint.py [--runs 3 --requests 20]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/api_footprint.py
"""

from __future__ import annotations

import argparse
import time

import httpx
from _harness import machine, median, print_table, redis_server, rss_mib, server_process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    ready_s, rss_ready, rss_served = [], [], []
    with redis_server() as redis_url:
        for _ in range(args.runs):
            started = time.perf_counter()
            with server_process("--redis-url", redis_url, "--model", "micro", role="api") as api:
                ready_s.append(time.perf_counter() - started)
                rss_ready.append(rss_mib(api.pid))
                with httpx.Client(base_url=api.url, timeout=30) as client:
                    for i in range(args.requests):
                        job = client.post("/v1/videos", json={"prompt": f"a red circle moving right {i}"}).json()
                        assert client.get(f"/v1/videos/{job['id']}").status_code == 200
                rss_served.append(rss_mib(api.pid))
    rows = [
        ["start to /readyz, s", f"{median(ready_s):.2f}", ", ".join(f"{x:.2f}" for x in ready_s)],
        ["RSS when ready, MiB", f"{median(rss_ready):.0f}", ", ".join(f"{x:.0f}" for x in rss_ready)],
        [f"RSS after {args.requests} submits and reads, MiB", f"{median(rss_served):.0f}",
         ", ".join(f"{x:.0f}" for x in rss_served)],
    ]
    print_table(f"reelserve api (model micro, private Redis), {args.runs} runs\n{machine()}",
                ["measure", "median", "runs"], rows)


if __name__ == "__main__":
    main()
