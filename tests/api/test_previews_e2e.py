"""Live previews over real HTTP, in both modes: every ``preview_every`` steps an SSE ``preview`` event
carries a small animated WebP of the running video, the newest is at ``GET /v1/videos/{id}/preview``
(across processes in the distributed mode: events through Redis, the image through storage), and
the job's timings say when the first came."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image
from support import RunningServer, gate_pipeline, serve, serve_in_mode, sse_events, wait_until

BODY = {"prompt": "a paper boat on a river", "size": "32x32", "num_frames": 9, "num_inference_steps": 6, "seed": 3}


def webp(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    return image


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_previews_stream_while_the_video_runs_and_the_newest_stays(tmp_path: Path, mode: str) -> None:
    with serve_in_mode(mode, tmp_path) as server:
        gate = gate_pipeline(server)
        gate.hold()
        video = server.client.post("/v1/videos", json={**BODY, "preview_every": 2}).json()
        assert video["preview_every"] == 2
        with ThreadPoolExecutor(1) as pool:
            following = pool.submit(sse_events, server, video["id"])
            assert gate.entered.wait(30)
            wait_until(lambda: video["id"] in _listeners(server))
            gate.gate.set()
            events = following.result(timeout=60)

        kinds = [kind for kind, _ in events]
        previews = [event for kind, event in events if kind == "preview"]
        assert [(e["step"], e["total_steps"]) for e in previews] == [(2, 6), (4, 6)]  # none at 6: the video is
        assert kinds.index("preview") < kinds.index("status", kinds.index("preview"))  # before the final status
        images = []
        for event in previews:
            head, data = event["preview"].split(",", 1)
            assert head == "data:image/webp;base64"
            images.append(base64.b64decode(data))
            assert webp(images[-1]).size == (32, 32)

        done = server.client.get(f"/v1/videos/{video['id']}").json()
        assert done["status"] == "completed"
        assert 0 < done["timings"]["first_preview_s"] < done["timings"]["total_s"]
        # Stored off the loop, as the run goes on: the newest lands within moments of its event.
        wait_until(lambda: server.client.get(f"/v1/videos/{video['id']}/preview").content == images[-1])
        newest = server.client.get(f"/v1/videos/{video['id']}/preview")
        assert newest.status_code == 200 and newest.headers["content-type"] == "image/webp"
        assert newest.headers["cache-control"] == "no-store"

        server.client.delete(f"/v1/videos/{video['id']}")
        assert server.client.get(f"/v1/videos/{video['id']}/preview").status_code == 404


def _listeners(server: RunningServer) -> list[str]:
    return server.server.engine.bus.listening_jobs()


def test_a_preview_that_could_never_come_is_refused_naming_the_field(server: RunningServer) -> None:
    refused = server.client.post("/v1/videos", json={**BODY, "preview_every": 7})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["param"] == "preview_every" and "send 1 to 6" in error["message"]
    assert server.client.get("/v1/videos").json()["data"] == []  # nothing was created
    negative = server.client.post("/v1/videos", json={**BODY, "preview_every": -1})
    assert negative.status_code in (400, 422) and "preview_every" in negative.text


def test_a_video_without_previews_says_how_to_ask(server: RunningServer) -> None:
    done = server.client.post("/v1/videos/sync", json=BODY).json()
    assert done["status"] == "completed" and done["preview_every"] == 0
    assert done["timings"]["first_preview_s"] is None
    answer = server.client.get(f"/v1/videos/{done['id']}/preview")
    assert answer.status_code == 409 and "send preview_every" in answer.json()["error"]["message"]


def test_the_server_default_previews_every_request_that_leaves_it_out(tmp_path: Path) -> None:
    with serve(tmp_path / "data", preview_every=3) as server:
        parameters = server.client.get("/v1/models/tiny").json()["parameters"]
        assert parameters["preview_every"]["default"] == 3
        done = server.client.post("/v1/videos/sync", json=BODY).json()
        assert done["status"] == "completed" and done["preview_every"] == 3
        assert done["timings"]["first_preview_s"] is not None
        wait_until(lambda: server.client.get(f"/v1/videos/{done['id']}/preview").status_code == 200)
        off = server.client.post("/v1/videos/sync", json={**BODY, "preview_every": 0}).json()
        assert off["preview_every"] == 0 and off["timings"]["first_preview_s"] is None
