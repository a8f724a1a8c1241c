"""The micro model's own adapters (``reelserve/models/weights/micro-adapters``, trained by ``reelserve
micro lora``) over real HTTP: offered as public adapters when the server takes adapters, and each does
what it says in the videos it makes (read back from the MP4 by the micro judge)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from support import RunningServer, final_video, serve

from reelserve.micro.distill import STUDENT_SHIFT, STUDENT_STEPS
from reelserve.micro.evaluate import judge
from reelserve.micro.styles import read_style
from reelserve.models.micro import MICRO_WEIGHTS

PROMPTS = [("a red square moving right", "red", "square", "right"),
           ("a blue circle moving down on a black background", "blue", "circle", "down"),
           ("a yellow triangle moving left over grey", "yellow", "triangle", "left")]


def frames_of(server: RunningServer, video_id: str) -> np.ndarray:
    assert final_video(server, video_id)["status"] == "completed"
    data = server.client.get(f"/v1/videos/{video_id}/content").content
    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_the_micro_adapters_are_offered_and_do_what_they_say(tmp_path: Path) -> None:
    with serve(tmp_path / "data", model="micro", adapters=True) as server:
        listed = {a["name"]: a for a in server.client.get("/v1/adapters").json()["data"]}
        assert set(listed) == {"outline", "fast"} and {a["owner"] for a in listed.values()} == {"public"}
        assert "outline" in listed["outline"]["description"]
        assert (listed["fast"]["steps"], listed["fast"]["guidance"], listed["fast"]["shift"]) == (
            STUDENT_STEPS, 1.0, STUDENT_SHIFT)
        jobs = []
        for prompt, *_ in PROMPTS:
            body = {"prompt": prompt, "seed": 0}
            jobs.append([server.client.post("/v1/videos", json={**body, **extra}).json() for extra in (
                {}, {"loras": [{"name": "outline"}]}, {"loras": [{"name": "fast"}]})])
        outlines, kept, followed = [], [], []
        for (prompt, color, shape, motion), (plain, outlined, fast) in zip(PROMPTS, jobs, strict=True):
            # The distillation's recommended settings ran, and the video object says so.
            assert (fast["num_inference_steps"], fast["guidance_scale"], fast["flow_shift"]) == (
                STUDENT_STEPS, 1.0, STUDENT_SHIFT)
            base, styled, quick = (frames_of(server, job["id"]) for job in (plain, outlined, fast))
            assert not read_style(base).outlined, prompt
            outlines.append(read_style(styled).outlined)
            seen = judge(styled)
            kept.append((seen.color, seen.motion, read_style(styled).shape) == (color, motion, shape))
            seen = judge(quick)
            followed.append((seen.color, seen.motion, seen.shape) == (color, motion, shape))
        # As measured on the held-out set (docs/benchmarks.md): outlined 85.7 %, and what is kept and what
        # the 4-step adapter follows right most of the time, not always (an outline's colour drifts most).
        assert all(outlines) and sum(kept) >= 2 and sum(followed) >= 2


def test_another_model_directory_gets_no_bundled_adapters(tmp_path: Path) -> None:
    # They were trained for the committed weights; a directory of other weights may hold anything.
    with serve(tmp_path / "data", model="micro", adapters=True, model_path=str(MICRO_WEIGHTS)) as server:
        assert server.client.get("/v1/adapters").json()["data"] == []
