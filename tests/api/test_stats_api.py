"""``GET /v1/admin/stats`` (the dashboard's JSON) and per-caller listing, in both modes: in the
distributed one the API process runs no batch, so what it reports comes from the worker through Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ADMIN, ALICE, BOB, RunningServer, auth, gate_pipeline, serve, wait_until

KEYS = {"api_keys": [ALICE, BOB], "admin_keys": [ADMIN]}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """For what does not depend on the mode (the same router serves both)."""
    with serve(tmp_path_factory.mktemp("stats") / "data", **KEYS) as running:
        yield running


def stats(running: RunningServer, **query: int) -> dict:
    response = running.client.get("/v1/admin/stats", params=query, headers=auth(ADMIN))
    assert response.status_code == 200, response.text
    return response.json()


def test_stats_count_what_the_workers_did(keyed: RunningServer) -> None:
    c = keyed.client
    for prompt in ("a red ball", "a blue cube", "a red ball"):  # the third is a cache hit
        done = c.post("/v1/videos/sync", json={"prompt": prompt, "seed": 7}, headers=auth(ALICE)).json()
        assert done["status"] == "completed"
    queued = c.post("/v1/videos", json={"prompt": "a green cone"}, headers=auth(BOB)).json()
    assert c.post(f"/v1/videos/{queued['id']}/cancel", headers=auth(BOB)).status_code == 200

    def counted() -> dict | None:
        body = stats(keyed, window=300, step=60)
        totals = body["totals"]
        return body if totals["completed"] + totals["cancelled"] >= 4 else None  # the cancel may lose the race

    body = wait_until(counted, timeout=30)
    totals = body["totals"]
    finished = totals["completed"] + totals["cancelled"]
    assert finished == 4 and totals["cached"] == 1 and totals["failed"] == 0
    assert totals["cache_hit_rate"] == pytest.approx(1 / totals["completed"])
    assert totals["throughput_per_min"] == pytest.approx(totals["completed"] / 5)
    assert 0 < totals["p50_s"] <= totals["p95_s"]
    assert sum(b["size"] * b["count"] for b in body["batch_sizes"]) >= 2  # the two that ran
    assert len(body["series"]) == 5 and sum(p["completed"] for p in body["series"]) == totals["completed"]
    assert body["model"] == {"id": "tiny", "ready": True, "accelerations": ["cfg_batching", "shared_time_embedding", "channels_last", "fused_ffn"]}
    expected_worker = "embedded" if keyed.worker is keyed.server else "worker-1"
    assert [(w["name"], w["model"]) for w in body["workers"]] == [(expected_worker, "tiny")]
    assert body["workers"][0]["state"] in ("idle", "busy")


def test_queue_depth_per_tier_while_the_worker_is_held(keyed: RunningServer) -> None:
    c = keyed.client
    gate = gate_pipeline(keyed)
    gate.hold()
    try:
        running = c.post("/v1/videos", json={"prompt": "holds the worker"}, headers=auth(ALICE)).json()
        assert gate.entered.wait(30)
        for priority, n in (("batch", 2), ("realtime", 1)):
            for i in range(n):
                body = {"prompt": f"waits {priority} {i}", "priority": priority}
                assert c.post("/v1/videos", json=body, headers=auth(ALICE)).status_code == 200
        queue = wait_until(lambda: (q := stats(keyed)["queue"])["depth"] == 3 and q, timeout=10)
        assert queue["by_tier"] == {"realtime": 1, "standard": 0, "batch": 2}
        busy = wait_until(lambda: [w for w in stats(keyed)["workers"] if w["state"] == "busy"], timeout=10)
        assert busy[0]["running"] >= 1
    finally:
        gate.gate.set()
    wait_until(lambda: c.get(f"/v1/videos/{running['id']}", headers=auth(ALICE)).json()["status"] == "completed")
    wait_until(lambda: stats(keyed)["queue"]["depth"] == 0, timeout=30)


@pytest.mark.parametrize(
    ("query", "param", "says"),
    [
        ({"step": 15}, "step", "multiple of 10"),
        ({"window": 300, "step": 25}, "step", "multiple of 10"),
        ({"window": 300, "step": 200}, "step", "divide window"),
        ({"window": 30}, "window", "at least 60"),
        ({"window": 7200}, "window", "at most 3600"),
        ({"step": 5}, "step", "at least 10"),
    ],
)
def test_bad_windows_are_refused_naming_the_parameter(
    embedded: RunningServer, query: dict, param: str, says: str
) -> None:
    response = embedded.client.get("/v1/admin/stats", params=query, headers=auth(ADMIN))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]


def test_stats_need_the_admin_key(keyed: RunningServer, tmp_path: Path) -> None:
    assert keyed.client.get("/v1/admin/stats").status_code == 401
    assert keyed.client.get("/v1/admin/stats", headers=auth(ALICE)).status_code == 401


def test_stats_are_forbidden_without_admin_keys(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as running:
        response = running.client.get("/v1/admin/stats")
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_each_caller_lists_only_its_own_jobs(keyed: RunningServer) -> None:
    c = keyed.client
    mine = [c.post("/v1/videos", json={"prompt": f"alice {i}"}, headers=auth(ALICE)).json()["id"] for i in range(3)]
    theirs = c.post("/v1/videos", json={"prompt": "bob"}, headers=auth(BOB)).json()["id"]

    def ids(key: str, **params: object) -> list[str]:
        response = c.get("/v1/videos", params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        return [video["id"] for video in response.json()["data"]]

    assert ids(ALICE) == mine[::-1]
    assert ids(ALICE, limit=2, after=mine[2]) == mine[1::-1]
    assert ids(BOB) == [theirs]
    refused = c.get("/v1/videos", params={"after": mine[0]}, headers=auth(BOB))  # another caller's cursor
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "after"


def test_pages_are_served_without_a_key(keyed: RunningServer) -> None:
    for path, marker in (("/", "playground.js"), ("/admin", "admin.js")):
        response = httpx.get(keyed.url + path)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        assert marker in response.text
