"""LoRA adapters over real HTTP (tiny model): registered from --adapters-dir and by the admin API,
listed per tenant, named per request and co-batched; bad adapters and bad requests are 4xx naming the
field with nothing stored; an adapter deleted while its row runs lets the row finish."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from lora_files import lora_file
from support import ADMIN, ALICE, BOB, TENANT_KEYS, RunningServer, auth, final_video, gate_pipeline, serve

BODY = {"prompt": "a paper boat on a river", "size": "32x32", "num_frames": 5, "num_inference_steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("adapters")
    lora_file(directory / "style.safetensors", seed=1)
    (directory / "style.json").write_text('{"description": "a test style"}')
    with serve(tmp_path_factory.mktemp("data") / "data", adapters_dir=directory, **TENANT_KEYS) as running:
        running.client.headers.update(auth(ALICE))
        yield running


def upload(server: RunningServer, name: str, data: bytes, **fields: str) -> dict:
    response = server.client.post("/v1/admin/adapters", headers=auth(ADMIN), data={"name": name, **fields},
                                  files={"file": (f"{name}.safetensors", data, "application/octet-stream")})
    return {"status": response.status_code, **response.json()}


def stored(server: RunningServer) -> list[str]:
    root = server.server.settings.storage_dir / "adapters"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_adapters_are_listed_named_and_change_the_video(server: RunningServer, tmp_path: Path) -> None:
    listed = server.client.get("/v1/adapters").json()["data"]
    assert [(a["name"], a["owner"], a["description"]) for a in listed] == [("style", "public", "a test style")]
    model = server.client.get("/v1/models/tiny").json()
    assert model["parameters"]["loras"]["max_items"] == 4
    plain = server.client.post("/v1/videos", json=BODY).json()
    styled = server.client.post("/v1/videos", json={**BODY, "loras": [{"name": "style", "scale": 0.8}]}).json()
    assert styled["cached"] is False  # not the plain video's cache entry
    assert styled["loras"] == [{"name": "style", "sha256": listed[0]["sha256"], "scale": 0.8}]
    for job in (plain, styled):
        assert final_video(server, job["id"], ALICE)["status"] == "completed"
    videos = [server.client.get(f"/v1/videos/{job['id']}/content").content for job in (plain, styled)]
    assert videos[0] != videos[1]
    again = server.client.post("/v1/videos", json={**BODY, "loras": [{"name": "style", "scale": 0.8}]}).json()
    assert again["cached"] is True
    metrics = server.client.get("/metrics").text
    assert 'reelserve_lora_adapter_events_total{event="load"} 1.0' in metrics


def test_a_tenants_adapter_is_its_own_and_bad_requests_name_the_field(server: RunningServer, tmp_path: Path) -> None:
    added = upload(server, "bobs", lora_file(tmp_path / "bobs.safetensors", seed=2), owner_api_key=BOB)
    assert added["status"] == 200 and added["owner"] == "yours"
    assert [a["name"] for a in server.client.get("/v1/adapters", headers=auth(BOB)).json()["data"]] == ["bobs", "style"]
    assert [a["name"] for a in server.client.get("/v1/adapters").json()["data"]] == ["style"]
    before = len(server.server.store.list(10_000, None))
    cases = [
        ([{"name": "bobs"}], "loras[0].name", "no adapter 'bobs'"),  # Bob's, asked by Alice: as unknown
        ([{"name": "nothing"}], "loras[0].name", "no adapter 'nothing'"),
        ([{"name": "style"}, {"name": "style"}], "loras[1].name", "twice"),
        ([{"name": "style", "scale": 9}], "loras.0.scale", ""),
        ([{"name": "style"}] * 5, "loras", "at most 4"),
    ]
    for loras, param, words in cases:
        response = server.client.post("/v1/videos", json={**BODY, "loras": loras})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], error
    assert len(server.server.store.list(10_000, None)) == before
    bobs = server.client.post("/v1/videos", headers=auth(BOB), json={**BODY, "loras": [{"name": "bobs"}]}).json()
    assert final_video(server, bobs["id"], BOB)["status"] == "completed"


def test_files_that_are_no_adapter_for_this_model_are_refused_and_nothing_is_stored(
        server: RunningServer, tmp_path: Path) -> None:
    before = stored(server)
    pickled = io.BytesIO()
    torch.save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)}, pickled)
    good = lora_file(tmp_path / "good.safetensors", seed=3)
    for data, words in ((pickled.getvalue(), "not a safetensors file"), (good[:-64], "truncated"),
                        (lora_file(tmp_path / "wide.safetensors", seed=4, widen=8), "another model")):
        refused = upload(server, "bad", data)
        assert refused["status"] == 422 and refused["error"]["param"] == "file", refused
        assert words in refused["error"]["message"], refused
    assert upload(server, "../escape", good)["error"]["param"] == "name"
    too_big = upload(server, "huge", b"\0" * (server.server.settings.max_upload_bytes + 1))
    assert too_big["status"] == 413
    assert stored(server) == before
    assert server.client.post("/v1/admin/adapters", data={"name": "x"}, files={"file": ("x", good)}).status_code == 401


def test_an_adapter_deleted_while_its_row_runs_lets_the_row_finish(server: RunningServer, tmp_path: Path) -> None:
    assert upload(server, "brief", lora_file(tmp_path / "brief.safetensors", seed=5))["status"] == 200
    gate = gate_pipeline(server)
    gate.hold()
    try:
        job = server.client.post("/v1/videos", json={**BODY, "seed": 11, "loras": [{"name": "brief"}]}).json()
        assert gate.entered.wait(30)
        deleted = server.client.delete("/v1/admin/adapters/brief", headers=auth(ADMIN)).json()
        assert deleted["deleted"] is True
    finally:
        gate.gate.set()
    assert final_video(server, job["id"], ALICE)["status"] == "completed"
    gone = server.client.post("/v1/videos", json={**BODY, "loras": [{"name": "brief"}]})
    assert gone.status_code == 422 and gone.json()["error"]["param"] == "loras[0].name"
    assert server.client.delete("/v1/admin/adapters/brief", headers=auth(ADMIN)).status_code == 404


def test_a_distillation_adapters_defaults_apply_when_the_request_sets_none(server: RunningServer,
                                                                           tmp_path: Path) -> None:
    bad = upload(server, "fewstep", lora_file(tmp_path / "few.safetensors", seed=6), shift="0")
    assert bad["status"] == 422 and bad["error"]["param"] == "shift" and "fewstep" not in str(stored(server))
    few = upload(server, "fewstep", lora_file(tmp_path / "few.safetensors", seed=6), steps="3", guidance="1.0",
                 shift="5")
    assert few["status"] == 200 and (few["steps"], few["guidance"], few["shift"]) == (3, 1.0, 5.0)
    body = {k: v for k, v in BODY.items() if k != "num_inference_steps"}
    defaulted = server.client.post("/v1/videos", json={**body, "loras": [{"name": "fewstep"}]}).json()
    assert (defaulted["num_inference_steps"], defaulted["guidance_scale"], defaulted["flow_shift"]) == (3, 1.0, 5.0)
    own = server.client.post("/v1/videos", json={**body, "num_inference_steps": 2, "guidance_scale": 4.0,
                                                 "flow_shift": 2.5, "loras": [{"name": "fewstep"}]}).json()
    # The request's own values win.
    assert (own["num_inference_steps"], own["guidance_scale"], own["flow_shift"]) == (2, 4.0, 2.5)
    plain = server.client.post("/v1/videos", json=body).json()
    assert plain["flow_shift"] is None  # the model's own
    too_far = server.client.post("/v1/videos", json={**body, "flow_shift": 25})
    assert too_far.status_code == 422 and too_far.json()["error"]["param"] == "flow_shift"
    for job in (defaulted, own, plain):
        assert final_video(server, job["id"], ALICE)["status"] == "completed"


def test_adapters_come_and_go_under_load_and_no_job_is_lost(server: RunningServer, tmp_path: Path) -> None:
    files = [lora_file(tmp_path / f"swap{i}.safetensors", seed=20 + i) for i in range(3)]
    assert upload(server, "steady", files[0])["status"] == 200
    jobs = []
    for i in range(6):  # jobs on the steady adapter while others are added and removed between them
        jobs.append(server.client.post("/v1/videos", json={**BODY, "seed": 100 + i,
                                                           "loras": [{"name": "steady", "scale": 0.5}]}).json())
        name = f"churn{i % 2}"
        assert upload(server, name, files[1 + i % 2])["status"] == 200
        assert server.client.delete(f"/v1/admin/adapters/{name}", headers=auth(ADMIN)).json()["deleted"]
    assert [final_video(server, job["id"], ALICE)["status"] for job in jobs] == ["completed"] * 6


def test_the_distributed_mode_shares_adapters_through_storage(tmp_path: Path) -> None:
    from support import serve_in_mode, wait_until

    directory = tmp_path / "adapters"
    directory.mkdir()
    lora_file(directory / "style.safetensors", seed=1)
    with serve_in_mode("distributed", tmp_path, adapters_dir=directory, admin_keys=[ADMIN]) as server:
        # The worker registered the directory's adapter; the API role reads the shared index.
        wait_until(lambda: server.client.get("/v1/adapters").json()["data"])
        job = server.client.post("/v1/videos", json={**BODY, "loras": [{"name": "style", "scale": 0.5}]}).json()
        assert final_video(server, job["id"])["status"] == "completed"
        added = upload(server, "late", lora_file(tmp_path / "late.safetensors", seed=2))  # on the API role
        assert added["status"] == 200
        late = server.client.post("/v1/videos", json={**BODY, "loras": [{"name": "late"}]}).json()
        assert final_video(server, late["id"])["status"] == "completed"


def test_a_queued_jobs_adapter_is_loaded_while_it_waits(server: RunningServer, tmp_path: Path) -> None:
    from support import wait_until

    assert upload(server, "waiting", lora_file(tmp_path / "waiting.safetensors", seed=30))["status"] == 200

    def loads() -> float:
        line = next(line for line in server.client.get("/metrics").text.splitlines()
                    if line.startswith('reelserve_lora_adapter_events_total{event="load"}'))
        return float(line.split()[-1])

    gate = gate_pipeline(server)
    gate.hold()
    try:
        busy = server.client.post("/v1/videos", json={**BODY, "seed": 40}).json()
        assert gate.entered.wait(30)  # the one lane is held: the next job waits in the queue
        before = loads()
        queued = server.client.post("/v1/videos", json={**BODY, "seed": 41, "loras": [{"name": "waiting"}]}).json()
        wait_until(lambda: loads() == before + 1)
        assert server.client.get(f"/v1/videos/{queued['id']}").json()["status"] == "queued"
    finally:
        gate.gate.set()
    for job in (busy, queued):
        assert final_video(server, job["id"], ALICE)["status"] == "completed"
    assert loads() == before + 1  # its run found it loaded
