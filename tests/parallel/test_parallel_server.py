"""A parallel micro server (cfg=2, one follower process) over HTTP: the bundled adapter reaches the
follower (its bank reads the server's storage) and draws its style, live previews come from rank 0, and
a running job is cancelled at a step boundary and the group runs the next one."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from family_wrappers import StepRecorder
from support import RunningServer, final_video, serve

from reelserve.micro.styles import read_style

BODY = {"prompt": "a red circle moving right", "seed": 0, "num_inference_steps": 8}


def frames_of(server: RunningServer, video_id: str) -> np.ndarray:
    data = server.client.get(f"/v1/videos/{video_id}/content").content
    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_adapters_previews_and_cancels_on_a_parallel_worker(tmp_path: Path) -> None:
    with serve(tmp_path / "data", model="micro", adapters=True, parallel="cfg=2", max_batch_size=4) as server:
        assert server.worker.model.ranks.pids()
        plain = server.client.post("/v1/videos", json=BODY).json()
        outlined = server.client.post("/v1/videos", json={
            **BODY, "loras": [{"name": "outline"}], "preview_every": 4}).json()
        done = {job["id"]: final_video(server, job["id"]) for job in (plain, outlined)}
        assert {video["status"] for video in done.values()} == {"completed"}, done
        assert not read_style(frames_of(server, plain["id"])).outlined
        assert read_style(frames_of(server, outlined["id"])).outlined
        assert done[outlined["id"]]["timings"]["first_preview_s"] > 0
        preview = server.client.get(f"/v1/videos/{outlined['id']}/preview")
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/webp"

        runner = server.worker.engine.runner.runners[0]
        held = runner.family = StepRecorder(runner.family, hold_at=3)
        running = server.client.post("/v1/videos", json={**BODY, "seed": 1, "num_inference_steps": 4}).json()
        assert held.held.wait(60)
        queued = server.client.post("/v1/videos", json={**BODY, "seed": 2, "num_inference_steps": 4}).json()
        assert server.client.post(f"/v1/videos/{running['id']}/cancel").json()["status"] == "cancelled"
        held.gate.set()  # the running row leaves at the step boundary; the queued job runs after it
        assert final_video(server, running["id"])["status"] == "cancelled"
        assert final_video(server, queued["id"])["status"] == "completed"
        assert server.worker.model.ranks.restarts == 0
