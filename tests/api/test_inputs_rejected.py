"""Bad inputs to image to video, video to video and remix: each is a 4xx naming the field and saying
what to send, and nothing is created or stored (the job count and the storage stay as they were)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from support import ALICE, BOB, TENANT_KEYS, RunningServer, auth, final_video, gate_pipeline, serve

BODY = {"prompt": "a red circle moving right", "num_inference_steps": "2", "num_frames": "5"}


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with a few KB of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 16))
            + chunk(b"IEND", b""))


def long_clip(seconds: int) -> bytes:
    """A small clip ``seconds`` long (one 16x16 frame a second)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(seconds):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(tmp_path_factory.mktemp("inputs") / "data", model="micro", **TENANT_KEYS) as running:
        running.client.headers.update(auth(ALICE))
        yield running


def stored(server: RunningServer) -> tuple[int, list[str]]:
    root = server.server.settings.storage_dir
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return len(server.server.store.list(10_000, None)), files


def refused(server: RunningServer, response: httpx.Response, status: int, param: str, before: tuple) -> str:
    assert response.status_code == status, response.text[:400]
    error = response.json()["error"]
    assert error["param"] == param, error
    assert stored(server) == before, "a refused request created or stored something"
    return error["message"]


@pytest.mark.parametrize(("name", "data", "extra", "words"), [
    ("not an image", b"just some text, not a picture", {}, "not a PNG, JPEG or WebP"),
    ("a truncated PNG", png()[:60], {}, "could not be decoded"),
    ("a 20000x20000 PNG of a few KB", bomb_png(20000, 20000), {}, "megapixels"),
    ("the wrong size without input_fit", png(96, 64), {}, "input_fit"),
])
def test_a_bad_first_frame_is_refused(server: RunningServer, name: str, data: bytes, extra: dict, words: str) -> None:
    before = stored(server)
    response = server.client.post("/v1/videos", data={**BODY, **extra},
                                  files={"input_reference": ("first.png", data, "image/png")})
    assert words in refused(server, response, 422, "input_reference", before), name


def test_other_bad_inputs_are_refused_naming_their_field(server: RunningServer) -> None:
    before = stored(server)
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    json_body = {**BODY, "num_inference_steps": 2, "num_frames": 5}
    cases = [
        ({**json_body, "input_reference": "https://example.invalid/first.png"}, "input_reference", "fetches no URL"),
        ({**json_body, "input_reference": url, "input_fit": "stretch"}, "input_fit", ""),
        ({**json_body, "strength": 0.5}, "strength", "input_video"),
        ({**json_body, "input_fit": "crop"}, "input_fit", "leave input_fit out"),
        ({**json_body, "input_video": "data:video/mp4;base64,AAAA"}, "input_video", ""),
    ]
    for body, param, words in cases:
        assert words in refused(server, server.client.post("/v1/videos", json=body), 422, param, before), body
    too_long = server.client.post("/v1/videos", data={**BODY, "num_frames": "5"},
                                  files={"input_video": ("long.mp4", long_clip(70), "video/mp4")})
    assert "at most 60 s" in refused(server, too_long, 422, "input_video", before)
    for strength in ("0", "1.5", "-1"):
        response = server.client.post("/v1/videos", data={**BODY, "strength": strength},
                                      files={"input_video": ("long.mp4", long_clip(3), "video/mp4")})
        refused(server, response, 422, "strength", before)


def test_a_remix_only_of_ones_own_completed_video(server: RunningServer) -> None:
    video = server.client.post("/v1/videos", json={"prompt": "a red circle", "num_inference_steps": 2,
                                                   "num_frames": 5}).json()
    assert final_video(server, video["id"], ALICE)["status"] == "completed"
    before = stored(server)
    assert f"videos/{video['id']}/latents.safetensors" in before[1]  # kept for remixes: what a refusal must not touch
    remix = f"/v1/videos/{video['id']}/remix"
    foreign = server.client.post(remix, json={"prompt": "a blue circle"}, headers=auth(BOB))
    assert refused(server, foreign, 404, "video_id", before) == refused(
        server, server.client.post("/v1/videos/video_" + "0" * 32 + "/remix", json={"prompt": "x"}), 404,
        "video_id", before).replace("0" * 32, video["id"][6:])  # another's video reads as no video at all
    for strength in (0, 1.01, -0.5):
        refused(server, server.client.post(remix, json={"prompt": "a blue circle", "strength": strength}), 422,
                "strength", before)
    refused(server, server.client.post(remix, json={"prompt": "a blue circle", "strength": 0.01}), 422,
            "strength", before)  # 2 steps at 0.01 run none

    gate = gate_pipeline(server)
    gate.hold()
    try:
        running = server.client.post("/v1/videos", json={"prompt": "a slow one", "num_inference_steps": 2,
                                                         "num_frames": 5}).json()
        before = stored(server)
        unfinished = server.client.post(f"/v1/videos/{running['id']}/remix", json={"prompt": "x"})
        assert "only a completed video" in refused(server, unfinished, 409, "video_id", before)
    finally:
        gate.gate.set()
    assert final_video(server, running["id"], ALICE)["status"] == "completed"
