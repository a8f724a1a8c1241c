"""One key cannot fill a tier's queue: it holds at most its share (queued + running), the other keys are
still admitted, and once its jobs finish it is admitted again. Both modes: in the distributed one the
API process never sees the worker finish a job, and learns it from the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ALICE, BOB, TENANT_KEYS, RunningServer, auth, gate_pipeline, serve, serve_in_mode, wait_until

from reelserve.schemas.slo import Tier

# A 4-job standard queue: with the default share of 0.5 one key may hold 2.
TIERS = json.dumps([Tier(name="standard", level=0, default_deadline_s=900, max_deadline_s=3600,
                         max_queue=4).model_dump()])


@pytest.fixture(params=["embedded", "distributed"])
def keyed_small_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_mode(request.param, tmp_path, tiers=TIERS, **TENANT_KEYS) as running:
        yield running


def test_one_key_holds_at_most_its_share(keyed_small_queue: RunningServer) -> None:
    c = keyed_small_queue.client
    gate = gate_pipeline(keyed_small_queue)
    gate.hold()
    try:
        held = [c.post("/v1/videos", json={"prompt": f"alice {i}"}, headers=auth(ALICE)) for i in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        refused = c.post("/v1/videos", json={"prompt": "alice 2"}, headers=auth(ALICE))
        assert refused.status_code == 429 and refused.headers["retry-after"]
        error = refused.json()["error"]
        assert error["code"] == "queue_full" and "share" in error["message"] and "2 of 4" in error["message"]
        assert c.post("/v1/videos", json={"prompt": "bob"}, headers=auth(BOB)).status_code == 200
    finally:
        gate.gate.set()
    for response in held:
        job_id = response.json()["id"]
        wait_until(lambda job_id=job_id: c.get(f"/v1/videos/{job_id}", headers=auth(ALICE)).json()["status"]
                   == "completed", timeout=60)
    # Its jobs are done: admitted again (the distributed API learns it from the store within a second).
    wait_until(lambda: c.post("/v1/videos", json={"prompt": "alice again"}, headers=auth(ALICE)).status_code == 200,
               timeout=30, interval=0.2)


def test_without_api_keys_there_is_no_share(tmp_path: Path) -> None:
    """With auth off every caller is the one tenant: a share would cap the whole server at half its queue."""
    with serve(tmp_path / "data", tiers=TIERS) as running:
        gate = gate_pipeline(running)
        gate.hold()
        try:
            statuses = [running.client.post("/v1/videos", json={"prompt": f"p {i}"}).status_code for i in range(4)]
            assert statuses == [200, 200, 200, 200]
        finally:
            gate.gate.set()
