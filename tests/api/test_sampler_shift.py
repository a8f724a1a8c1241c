"""Weights whose sampler takes no timestep shift and noises no source (FlowMatchEuler: its ``shift`` is
its own config, and it has ``scale_noise`` instead of ``add_noise``): a request's ``flow_shift``, a clip
to re-draw and a remix are refused before anything is stored, the model object offers none of them, and
requests without them run on that sampler."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
from diffusers import FlowMatchEulerDiscreteScheduler

from reelserve.micro.distill import STUDENT_STEPS
from reelserve.models.micro import MICRO_ADAPTERS, MICRO_WEIGHTS
from support import serve


def weights_with_euler(root: Path) -> Path:
    weights = root / "micro-euler"
    shutil.copytree(MICRO_WEIGHTS, weights)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_config(weights / "scheduler")
    index = json.loads((weights / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]  # the class diffusers builds
    (weights / "model_index.json").write_text(json.dumps(index))
    return weights


def frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_sampler_without_a_shift_refuses_what_it_cannot_run_and_runs_the_rest(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"  # the bundled distillation, which recommends a shift
    adapters.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(MICRO_ADAPTERS / f"fast{suffix}", adapters / f"fast{suffix}")
    weights = weights_with_euler(tmp_path)
    with serve(tmp_path / "data", model="micro", model_path=str(weights), adapters_dir=adapters) as running:
        assert type(running.server.model.pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        model = running.client.get("/v1/models/micro").json()
        assert "flow_shift" not in model["parameters"] and "input_video" not in model["parameters"]
        assert model["inputs"]["video"] is False and model["inputs"]["remix"] is False
        body = {"prompt": "a red ball moves right", "size": "64x64", "seconds": "1", "num_inference_steps": 3}
        refused = running.client.post("/v1/videos", json={**body, "flow_shift": 3.0})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["param"] == "flow_shift" and "leave flow_shift out" in error["message"]
        assert running.client.get("/v1/videos").json()["data"] == []  # nothing stored

        done = running.client.post("/v1/videos/sync", json=body).json()
        assert done["status"] == "completed" and done["flow_shift"] is None, done
        content = running.client.get(f"/v1/videos/{done['id']}/content").content
        assert frames(content) == done["num_frames"]
        # The distillation adapter's recommended steps apply; its shift, which this sampler cannot take, does not.
        fast = running.client.post("/v1/videos/sync", json={**body, "num_inference_steps": None,
                                                            "loras": [{"name": "fast"}]}).json()
        assert fast.get("status") == "completed", fast
        assert (fast["num_inference_steps"], fast["flow_shift"]) == (STUDENT_STEPS, None)

        remix = running.client.post(f"/v1/videos/{done['id']}/remix", json={"prompt": "a blue ball"})
        assert remix.status_code == 422 and remix.json()["error"]["param"] == "video_id", remix.text
        redraw = running.client.post("/v1/videos", data={**body, "num_inference_steps": "3"},
                                     files={"input_video": ("clip.mp4", content, "video/mp4")})
        assert redraw.status_code == 422 and redraw.json()["error"]["param"] == "input_video", redraw.text
        assert {v["id"] for v in running.client.get("/v1/videos").json()["data"]} == {done["id"], fast["id"]}
