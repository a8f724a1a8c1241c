"""The other paths of /v1/videos over real HTTP: cancel, delete, sync timeout, paging, auth, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RunningServer, gate_pipeline, serve, wait_until

from reelserve.api.content import prefers_mp4
from reelserve.schemas import MAX_PROMPT_CHARS


def job_count(server: RunningServer) -> int:
    return len(server.server.store.list(1000))


def test_cancel_queued_and_running(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    running = server.client.post("/v1/videos", json={"prompt": "running", "num_inference_steps": 30}).json()
    assert gate.entered.wait(30)
    queued = server.client.post("/v1/videos", json={"prompt": "queued", "size": "32x32"}).json()

    cancelled = server.client.post(f"/v1/videos/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert server.client.post(f"/v1/videos/{running['id']}/cancel").json()["status"] == "cancelled"
    gate.gate.set()
    # the engine drops the running row at its next step boundary and serves the next job
    after = server.client.post("/v1/videos/sync", json={"prompt": "after"}).json()
    assert after["status"] == "completed"
    for job in (queued, running):
        again = server.client.get(f"/v1/videos/{job['id']}").json()
        assert again["status"] == "cancelled"
        assert server.client.get(f"/v1/videos/{job['id']}/content").status_code == 409
    assert server.server.store.transitions(queued["id"]) == [(None, "queued"), ("queued", "cancelled")]
    # cancelling a final job is a no-op that returns it
    assert server.client.post(f"/v1/videos/{after['id']}/cancel").json()["status"] == "completed"


def test_delete_removes_job_and_files(server: RunningServer) -> None:
    done = server.client.post("/v1/videos/sync", json={"prompt": "to delete"}).json()
    files = Path(server.server.settings.storage_dir) / "videos" / done["id"]
    assert (files / "video.mp4").exists()
    deleted = server.client.delete(f"/v1/videos/{done['id']}")
    assert deleted.json() == {"id": done["id"], "object": "video.deleted", "deleted": True}
    assert server.client.get(f"/v1/videos/{done['id']}").status_code == 404
    assert server.client.get(f"/v1/videos/{done['id']}/content").status_code == 404
    assert not files.exists()
    assert server.client.delete(f"/v1/videos/{done['id']}").status_code == 404


def test_delete_unfinished_cancels_it(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    server.client.post("/v1/videos", json={"prompt": "blocker", "size": "32x32"})
    assert gate.entered.wait(30)
    queued = server.client.post("/v1/videos", json={"prompt": "queued"}).json()
    assert server.client.delete(f"/v1/videos/{queued['id']}").json()["deleted"] is True
    gate.gate.set()
    assert server.client.get(f"/v1/videos/{queued['id']}").status_code == 404
    depth = [line for line in server.client.get("/metrics").text.splitlines() if line.startswith("reelserve_queue_depth ")]
    assert depth == ["reelserve_queue_depth 0.0"]


def test_sync_timeout_returns_202_and_job_keeps_running(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    response = server.client.post("/v1/videos/sync?wait=0.2", json={"prompt": "slow one"})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] in ("queued", "in_progress")
    gate.gate.set()
    done = wait_until(lambda: server.client.get(f"/v1/videos/{job['id']}").json()["status"] == "completed")
    assert done
    quick = server.client.post("/v1/videos?wait=60", json={"prompt": "fast one"})
    assert quick.status_code == 200 and quick.json()["status"] == "completed"


def test_list_pages_newest_first(server: RunningServer) -> None:
    gate = gate_pipeline(server)
    gate.hold()  # nothing needs to run for paging
    ids = [server.client.post("/v1/videos", json={"prompt": f"p{i}"}).json()["id"] for i in range(5)]
    page1 = server.client.get("/v1/videos", params={"limit": 2}).json()
    assert page1["object"] == "list" and [v["id"] for v in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] is True and page1["last_id"] == ids[3]
    page2 = server.client.get("/v1/videos", params={"limit": 2, "after": page1["last_id"]}).json()
    assert [v["id"] for v in page2["data"]] == [ids[2], ids[1]]
    page3 = server.client.get("/v1/videos", params={"limit": 2, "after": page2["last_id"]}).json()
    assert [v["id"] for v in page3["data"]] == [ids[0]] and page3["has_more"] is False
    bad = server.client.get("/v1/videos", params={"after": "video_nope"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "after"
    assert server.client.get("/v1/videos", params={"limit": 0}).json()["error"]["param"] == "limit"
    gate.gate.set()


BAD_BODIES = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
    ({"prompt": "x", "model": "no-such-model"}, "model"),
    ({"prompt": "x", "size": "65x64"}, "size"),
    ({"prompt": "x", "size": "big"}, "size"),
    ({"prompt": "x", "size": "512x512"}, "size"),
    ({"prompt": "x", "width": 64}, None),  # fine on its own: control case
    ({"prompt": "x", "num_frames": 8}, "num_frames"),
    ({"prompt": "x", "num_frames": 37}, "num_frames"),
    ({"prompt": "x", "seconds": 1.1}, "seconds"),
    ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "x", "num_inference_steps": 51}, "num_inference_steps"),
    ({"prompt": "x", "num_frames": "nine"}, "num_frames"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "guidance_scale_2": 3.0}, "guidance_scale_2"),
    ({"prompt": "x", "surprise": True}, "surprise"),
    ({}, "prompt"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
def test_bad_bodies_rejected_naming_the_field(server: RunningServer, body: dict, param: str | None) -> None:
    gate = gate_pipeline(server)
    gate.hold()
    before = job_count(server)
    response = server.client.post("/v1/videos", json=body)
    gate.gate.set()
    if param is None:
        assert response.status_code == 200
        return
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert error["code"] in ("invalid_parameter", "unknown_model")
    assert job_count(server) == before


def test_bad_input_messages_say_what_is_allowed(server: RunningServer) -> None:
    def error(**body: object) -> str:
        return server.client.post("/v1/videos", json={"prompt": "x", **body}).json()["error"]["message"]

    size = error(size="65x64")
    assert "multiples of 16" in size and "256" in size and "nearest: 64x64 or 80x64" in size
    frames = error(num_frames=8)
    assert "4k+1" in frames and "33" in frames and "nearest: 5 or 9" in frames
    seconds = error(seconds=100)
    assert seconds.startswith("seconds: at 8 fps this model makes at most 4 s (33 frames)") and "try 4" in seconds
    assert "nearest: 96 or 112" in error(width=100)
    assert "tiny" in error(model="nope")


@pytest.mark.parametrize(("body", "param"), [b for b in BAD_BODIES if b[1] is not None])
def test_no_validator_wording_reaches_the_user(server: RunningServer, body: dict, param: str) -> None:
    message = server.client.post("/v1/videos", json=body).json()["error"]["message"]
    assert message.startswith(param), message  # it names the field the user sent, first
    assert not any(words in message for words in ("Input should", "Field required", "String should", "Value error"))


def test_json_sent_as_a_form_is_read_as_json(server: RunningServer) -> None:
    """``curl -d '{...}'`` without a content type labels the JSON as a form."""
    response = server.client.post("/v1/videos", content=b'{"prompt": "a sniffed body", "num_frames": 5}',
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == "a sniffed body" and response.json()["num_frames"] == 5


def test_non_json_and_wrong_shapes(server: RunningServer) -> None:
    before = job_count(server)
    for content, ctype in [(b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                           (b"\xff\xfe", "text/plain")]:
        response = server.client.post("/v1/videos", content=content, headers={"content-type": ctype})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"
    wait = server.client.post("/v1/videos?wait=-1", json={"prompt": "x"})
    assert wait.status_code == 422 and wait.json()["error"]["param"] == "wait"
    assert job_count(server) == before


def test_unknown_ids_and_unfinished_content(server: RunningServer) -> None:
    for method, path in [("GET", "/v1/videos/video_x"), ("DELETE", "/v1/videos/video_x"),
                         ("POST", "/v1/videos/video_x/cancel"), ("GET", "/v1/videos/video_x/content"),
                         ("GET", "/v1/videos/video_x/events")]:
        response = server.client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    gate = gate_pipeline(server)
    gate.hold()
    job = server.client.post("/v1/videos", json={"prompt": "unfinished"}).json()
    response = server.client.get(f"/v1/videos/{job['id']}/content")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    bad_variant = server.client.get(f"/v1/videos/{job['id']}/content", params={"variant": "gif"})
    assert bad_variant.status_code == 422 and bad_variant.json()["error"]["param"] == "variant"
    gate.gate.set()


def test_api_keys(tmp_path: Path) -> None:
    with serve(tmp_path / "data", api_keys=["key-one", "key-two"]) as running:
        client = running.client
        missing = client.get("/v1/videos")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        wrong = client.get("/v1/videos", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.post("/v1/videos", json={"prompt": "x"}).status_code == 401
        assert job_count(running) == 0
        ok = client.get("/v1/videos", headers={"Authorization": "Bearer key-two"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_ops_endpoints(server: RunningServer) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"ready": True}
    schema = server.client.get("/openapi.json").json()
    assert "/v1/videos" in schema["paths"] and "/v1/videos/{video_id}/events" in schema["paths"]
    create_body = schema["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(create_body)
    assert server.client.get("/docs").status_code == 200
    server.client.post("/v1/videos/sync", json={"prompt": "metrics"})
    server.client.get("/v1/videos/video_" + "0" * 32)  # an unknown id of the right shape
    text = server.client.get("/metrics").text
    for name in ("reelserve_http_requests_total", "reelserve_queue_wait_seconds_bucket",
                 "reelserve_inference_seconds_bucket", "reelserve_end_to_end_seconds_bucket",
                 "reelserve_batch_size_bucket", "reelserve_queue_depth", "reelserve_jobs{status=\"completed\"}"):
        assert name in text, name
    assert 'route="/v1/videos/{video_id}",status="404"' in text


def test_not_ready_until_warm(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from reelserve.server import Server
    from reelserve.settings import Settings

    app = Server(Settings(data_dir=tmp_path / "d", device="cpu")).app
    client = TestClient(app)  # no lifespan: the model is never loaded
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize(
    ("accept", "mp4"),
    [("video/mp4", True), ("video/*", True), ("application/json, video/mp4", True), ("video/mp4;q=0.9, */*;q=0.1", True),
     (None, False), ("*/*", False), ("application/json", False), ("application/json, video/mp4;q=0.5", False),
     ("video/mp4;q=0", False), ("video/mp4;q=oops", False), ("text/html, application/xhtml+xml", False)],
)
def test_only_an_accept_header_that_prefers_mp4_gets_the_mp4(accept: str | None, mp4: bool) -> None:
    assert prefers_mp4(accept) is mp4
