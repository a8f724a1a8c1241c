"""Image to video and remix over real HTTP on the micro model (the Wan2.2 TI2V layout), in both modes:
the official openai SDK uploads a first frame (multipart) and remixes the result; JSON takes the image
as a data URL; the video starts from the given frame and moves its object as asked (the micro judge
reads it); the result cache keys on the image's pixels; a remix starts from the source's final latents,
runs its share of the steps, and says what it re-drew."""

from __future__ import annotations

import base64
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import openai
import pytest
from PIL import Image
from support import RunningServer, final_video, gate_pipeline, serve_in_mode, sse_events, wait_until

from reelserve.micro.dataset import first_frame_prompts
from reelserve.micro.evaluate import judge
from reelserve.micro.world import render

STEPS = 12
CASE = next(c for c in first_frame_prompts() if c.scene.motion == "right")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def frames_of(server: RunningServer, video_id: str) -> np.ndarray:
    data = server.client.get(f"/v1/videos/{video_id}/content").content
    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def object_error(frame: np.ndarray, first: np.ndarray) -> float:
    """Mean absolute error over the given frame's object (the pixels off its background colour)."""
    on_object = np.abs(first.astype(float) - np.median(first.reshape(-1, 3), axis=0)).sum(axis=-1) > 60
    return float(np.abs(frame.astype(float) - first)[on_object].mean())


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_image_to_video_and_remix_through_the_openai_sdk(tmp_path: Path, mode: str) -> None:
    first = CASE.first_frame()
    with serve_in_mode(mode, tmp_path, model="micro") as server, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the videos API deprecated
        client = sdk(server)
        (tmp_path / "first.png").write_bytes(png(first))
        with open(tmp_path / "first.png", "rb") as image:
            video = client.videos.create(model="micro", prompt=CASE.prompt.prompt, input_reference=image,
                                         size="64x64", extra_body={"num_inference_steps": STEPS, "seed": 1})
        assert video.model_extra is not None and video.model_extra["input_reference"].startswith("sha256:")
        done = final_video(server, video.id)
        assert done["status"] == "completed", done
        frames = frames_of(server, video.id)
        assert object_error(frames[0], first) < 20  # it starts from the given frame
        verdict = judge(frames)
        assert (verdict.color, verdict.shape, verdict.motion) == (CASE.scene.color, CASE.scene.shape, "right")

        remix = client.videos.remix(video.id, prompt=CASE.prompt.prompt.replace(CASE.scene.color, "yellow"),
                                    extra_body={"strength": 0.5, "seed": 1})
        assert remix.remixed_from_video_id == video.id
        remixed = final_video(server, remix.id)
        assert remixed["status"] == "completed", remixed
        assert remixed["strength"] == 0.5 and remixed["num_inference_steps"] == STEPS
        assert remixed["size"] == "64x64" and remixed["input_reference"] is None
        assert done["expires_at"] is not None and done["expires_at"] > done["completed_at"]


def test_json_data_urls_the_cache_and_what_the_model_object_says(tmp_path: Path) -> None:
    first = CASE.first_frame()
    url = "data:image/png;base64," + base64.b64encode(png(first)).decode()
    body = {"prompt": CASE.prompt.prompt, "num_inference_steps": 4, "seed": 2, "num_frames": 5}
    with serve_in_mode("embedded", tmp_path, model="micro") as server:
        model = server.client.get("/v1/models/micro").json()
        assert model["inputs"] == {"text": True, "image": "optional", "video": True, "remix": True}
        assert {"input_reference", "input_fit", "input_video", "strength"} <= set(model["parameters"])

        one = server.client.post("/v1/videos", json={**body, "input_reference": url}).json()
        assert final_video(server, one["id"])["status"] == "completed"
        # The same pixels as OpenAI's reference object: the same digest, so a cache hit.
        two = server.client.post("/v1/videos", json={**body, "input_reference": {"image_url": url}}).json()
        assert two["cached"] is True and two["input_reference"] == one["input_reference"]
        # A bigger image of the same scene, cropped to fit: other pixels, other digest, a new run.
        big = np.asarray(Image.fromarray(first).resize((96, 64)))
        three = server.client.post("/v1/videos", files={"input_reference": ("big.png", png(big), "image/png")},
                                   data={**{k: str(v) for k, v in body.items()}, "input_fit": "crop"}).json()
        assert three["cached"] is False and three["input_fit"] == "crop"
        assert three["input_reference"] != one["input_reference"]
        text_only = server.client.post("/v1/videos", json=body).json()
        assert text_only["cached"] is False and text_only["input_reference"] is None
        for job in (three, text_only):
            assert final_video(server, job["id"])["status"] == "completed"
        metrics = server.client.get("/metrics").text
        # The first image was read and encoded once, its cache hit ran nothing, the cropped one once more.
        assert 'reelserve_input_latents_requests_total{result="miss"} 2.0' in metrics
        # Where the given frame has its object, the image's video starts with it; the text's does not.
        image_error, text_error = (object_error(frames_of(server, job["id"])[0], first) for job in (one, text_only))
        assert image_error < 20 < text_error, (image_error, text_error)


def test_a_remix_of_expired_latents_re_encodes_the_mp4_and_video_to_video_takes_a_clip(tmp_path: Path) -> None:
    clip = render(CASE.scene)  # 17 frames of the micro world
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "10"}
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with serve_in_mode("embedded", tmp_path, model="micro", keep_latents_s=0) as server:
        gate = gate_pipeline(server)
        gate.hold()
        redrawn = server.client.post("/v1/videos", files={"input_video": ("clip.mp4", buffer.getvalue(), "video/mp4")},
                                     data={"prompt": CASE.prompt.prompt, "num_inference_steps": "10",
                                           "strength": "0.3", "seed": "4"}).json()
        assert redrawn["num_frames"] == 17 and redrawn["strength"] == 0.3, redrawn  # the clip's frame count
        with ThreadPoolExecutor(1) as pool:
            following = pool.submit(sse_events, server, redrawn["id"])
            wait_until(lambda: redrawn["id"] in server.server.engine.bus.listening_jobs())
            gate.gate.set()
            steps = [(e["step"], e["total_steps"]) for kind, e in following.result(timeout=120) if kind == "progress"]
        assert steps == [(1, 3), (2, 3), (3, 3)]  # int(10 · 0.3) steps re-drew it
        done = final_video(server, redrawn["id"])
        assert done["status"] == "completed" and done["expires_at"] is None  # no latents kept
        verdict = judge(frames_of(server, redrawn["id"]))
        assert (verdict.color, verdict.shape, verdict.motion) == (CASE.scene.color, CASE.scene.shape, "right")

        remix = server.client.post(f"/v1/videos/{redrawn['id']}/remix", json={"prompt": "a square", "seed": 1}).json()
        assert remix["strength"] == 0.5 and remix["remixed_from_video_id"] == redrawn["id"]
        assert final_video(server, remix["id"])["status"] == "completed"
        again = server.client.post(f"/v1/videos/{redrawn['id']}/remix", json={"prompt": "a square", "seed": 1}).json()
        assert again["cached"] is True and again["remixed_from_video_id"] == redrawn["id"]  # the same re-draw


def test_a_remix_is_a_job_like_any_other_cancel_and_priority(tmp_path: Path) -> None:
    with serve_in_mode("embedded", tmp_path, model="micro") as server:
        source = server.client.post("/v1/videos", json={"prompt": "a red circle moving up", "num_inference_steps": 4,
                                                         "num_frames": 5, "seed": 1}).json()
        assert final_video(server, source["id"])["status"] == "completed"
        gate = gate_pipeline(server)
        gate.hold()
        try:
            remix = server.client.post(f"/v1/videos/{source['id']}/remix",
                                       json={"prompt": "a blue circle moving up", "priority": "batch"}).json()
            assert remix["priority"] == "batch" and remix["status"] == "queued"
            cancelled = server.client.post(f"/v1/videos/{remix['id']}/cancel").json()
            assert cancelled["status"] == "cancelled"
        finally:
            gate.gate.set()
        assert final_video(server, remix["id"])["status"] == "cancelled"
        server.client.delete(f"/v1/videos/{source['id']}")
        gone = server.client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "x"})
        assert gone.status_code == 404 and gone.json()["error"]["param"] == "video_id"


def test_an_image_to_video_model_serves_only_with_a_first_frame(tmp_path: Path) -> None:
    """Wan2.2-I2V-A14B's layout (toy weights from a local directory): it warms up, lists an image as
    required, refuses a prompt alone and a remix, and makes a video from a first frame."""
    from reelserve.models.tiny import build_i2v_a14b_layout

    build_i2v_a14b_layout(0).save_pretrained(tmp_path / "i2v")
    first = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    body = {"prompt": "a paper boat", "size": "32x32", "num_frames": 5, "num_inference_steps": 4, "seed": 1}
    with serve_in_mode("embedded", tmp_path, model="wan2.2-i2v-a14b", model_path=str(tmp_path / "i2v")) as server:
        model = server.client.get("/v1/models/wan2.2-i2v-a14b").json()
        assert model["inputs"] == {"text": False, "image": "required", "video": False, "remix": False}
        alone = server.client.post("/v1/videos", json=body)
        assert alone.status_code == 422 and alone.json()["error"]["param"] == "input_reference"
        video = server.client.post("/v1/videos", data={k: str(v) for k, v in body.items()},
                                   files={"input_reference": ("first.png", png(first), "image/png")}).json()
        done = final_video(server, video["id"])
        assert done["status"] == "completed" and done["guidance_scale_2"] == done["guidance_scale"] == 3.5
        assert frames_of(server, video["id"]).shape == (5, 32, 32, 3)
        remix = server.client.post(f"/v1/videos/{video['id']}/remix", json={"prompt": "a red boat"})
        assert remix.status_code == 422 and remix.json()["error"]["param"] == "video_id"


def test_kept_latents_go_at_their_expiry(tmp_path: Path) -> None:
    with serve_in_mode("embedded", tmp_path, model="micro", keep_latents_s=5.0) as server:
        job = server.client.post("/v1/videos", json={"prompt": "a red circle moving up", "num_inference_steps": 2,
                                                     "num_frames": 5}).json()
        done = final_video(server, job["id"])
        kept = server.server.settings.storage_dir / "videos" / job["id"] / "latents.safetensors"
        assert kept.exists() and done["expires_at"] is not None
        wait_until(lambda: not kept.exists(), timeout=60)
        assert (server.server.settings.storage_dir / "videos" / job["id"] / "video.mp4").exists()
