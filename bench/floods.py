"""Floods against a real server (tiny model, two API keys), loopback only, each bounded in count and time:

1. 100 MB bodies: each is answered 413 before its body is sent; the server's RSS stays flat.
2. 300 slow connections dribbling their headers: each is closed once the header deadline passes.
3. 20,000 requests with made-up methods and paths: the /metrics series count stays flat.
4. One key floods 2,000 job requests while a second key keeps submitting: the second is still admitted.
Then every job accepted during the floods reaches a final state.

Run: .venv/bin/python bench/floods.py   (about two minutes on 2 cores)
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, print_table, rss_mib, server_process  # noqa: E402

ALICE, BOB, ADMIN = "flood-alice", "flood-bob", "flood-admin"
HEADER_TIMEOUT_S = 5.0


def _raw(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head)
    return sock


def _response_head(sock: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
        received += chunk
    return received


def big_bodies(port: int, pid: int, count: int = 10, size: int = 100 * 2**20) -> list[str]:
    before = rss_mib(pid)
    first_answer = []
    chunk = b"x" * 2**20
    for _ in range(count):
        sock = _raw(port, b"POST /v1/videos HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"authorization: Bearer " + ALICE.encode() + f"\r\ncontent-length: {size}\r\n\r\n".encode())
        started = time.perf_counter()
        head = _response_head(sock)
        first_answer.append(time.perf_counter() - started)
        assert head.startswith(b"HTTP/1.1 413"), head[:80]
        for _ in range(size // len(chunk)):  # the whole 100 MB goes over; the server drops it
            sock.sendall(chunk)
        sock.close()
    after = rss_mib(pid)
    return [f"{count} × 100 MB bodies", f"413 in at most {max(first_answer) * 1000:.1f} ms",
            f"RSS {before:.0f} → {after:.0f} MiB"]


def slow_connections(port: int, count: int = 300) -> list[str]:
    socks = [_raw(port, b"GET /v1/videos HTTP/1.1\r\nhost: x\r\n") for _ in range(count)]
    started = time.monotonic()
    closed_after = []
    deadline = started + HEADER_TIMEOUT_S * 4
    for sock in socks:  # each keeps dribbling a header byte a second until the server closes it
        sock.settimeout(0.0)
    pending = set(range(count))
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            try:
                data = socks[i].recv(65536)
                if not data or b"408" in data:
                    closed_after.append(time.monotonic() - started)
                    pending.discard(i)
            except BlockingIOError:
                try:
                    socks[i].send(b"x")
                except OSError:
                    closed_after.append(time.monotonic() - started)
                    pending.discard(i)
        time.sleep(1.0)  # the slowloris pace: a byte a second per connection
    for sock in socks:
        sock.close()
    return [f"{count} slow-header connections", f"{count - len(pending)} closed (408), {len(pending)} still open",
            f"closed {min(closed_after):.1f}–{max(closed_after):.1f} s after opening (deadline {HEADER_TIMEOUT_S:g} s)"]


def series(url: str) -> int:
    text = httpx.get(url + "/metrics").text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def random_methods(url: str, count: int = 20_000) -> list[str]:
    rng = random.Random(7)
    statuses: dict[int, int] = {}
    seen: list[int] = []  # series after the first batch, and after the last
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(i: int) -> None:
            method = rng.choice(["GET", "POST", "BREW", "PROPFIND", f"M{rng.randrange(10**6)}", "DELETE"])
            response = await client.request(method, f"/p{rng.randrange(10**9)}/{i}")
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        for start in range(0, count, 200):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
            if start == 0:
                seen.append(series(url))  # the first 200 create the few "other"/"unmatched" series
    seen.append(series(url))
    return [f"{count} requests, random methods and paths", f"statuses {dict(sorted(statuses.items()))}",
            f"/metrics series after 200: {seen[0]}, after {count}: {seen[1]}"]


async def one_key_floods(url: str, flood: int = 2000, probes: int = 20) -> tuple[list[str], list[str]]:
    admitted = {"alice": 0, "bob": 0}
    refused = {"alice": 0, "bob": 0}
    reasons: dict[str, int] = {}
    accepted: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def submit(who: str, key: str, i: int) -> None:
            body = {"prompt": f"flood {who} {i}", "num_inference_steps": 50}
            response = await client.post("/v1/videos", json=body, headers={"authorization": f"Bearer {key}"})
            if response.status_code == 200:
                admitted[who] += 1
                accepted.append(response.json()["id"])
            else:
                assert response.status_code == 429, response.text
                refused[who] += 1
                code = f"{who}:{response.json()['error']['code']}"
                reasons[code] = reasons.get(code, 0) + 1
        for start in range(0, flood, 100):  # Alice's flood, with one of Bob's requests every 100
            batch = [submit("alice", ALICE, i) for i in range(start, start + 100)]
            if start // 100 < probes:
                batch.append(submit("bob", BOB, start))
            await asyncio.gather(*batch)
    row = [f"Alice floods {flood}, Bob sends {probes} during it",
           f"Alice admitted {admitted['alice']}, refused {refused['alice']}",
           f"Bob admitted {admitted['bob']} of {probes}; refusals {dict(sorted(reasons.items()))}"]
    return row, accepted


async def all_final(url: str, ids: list[str], timeout: float = 300) -> str:
    """Cancel what is still queued (a flood is not worth running to the end here), then check every
    accepted job is final."""
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(0, len(ids), 100):
            await asyncio.gather(*(client.post(f"/v1/videos/{job}/cancel", headers=admin) for job in ids[i:i + 100]))
        deadline = time.monotonic() + timeout
        while True:
            statuses = [(await client.get(f"/v1/videos/{job}", headers=admin)).json()["status"] for job in ids]
            unfinished = [s for s in statuses if s not in ("completed", "failed", "cancelled")]
            if not unfinished or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    return f"{len(ids)} accepted jobs: {counts}; unfinished {len(unfinished)}"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        keys.write_text(f"{ALICE}\n{BOB}\n")
        flags = ("--model", "tiny", "--device", "cpu", "--warmup-runs", "0", "--api-keys-file", str(keys),
                 "--admin-keys", ADMIN, "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", "10")
        with server_process(*flags) as running:
            port = int(running.url.rsplit(":", 1)[1])
            rows = [big_bodies(port, running.pid), slow_connections(port), asyncio.run(random_methods(running.url))]
            flood_row, accepted = asyncio.run(one_key_floods(running.url))
            rows.append(flood_row)
            final = asyncio.run(all_final(running.url, accepted))
    print_table(f"Floods ({machine()})", ["flood", "answer", "measured"], rows)
    print(final)


if __name__ == "__main__":
    main()
