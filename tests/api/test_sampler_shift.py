"""Weights whose sampler takes no timestep shift (a FlowMatchEuler scheduler, which calls its own
``shift``): a request's ``flow_shift`` is refused before anything is stored, the model object does
not offer it, and requests without it run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler

from reelserve.micro.distill import STUDENT_STEPS
from reelserve.models.micro import MICRO_ADAPTERS, MICRO_WEIGHTS
from reelserve.models.specs import sampler_takes_shift
from support import serve


def _weights_with_euler(root: Path) -> Path:
    weights = root / "micro-euler"
    shutil.copytree(MICRO_WEIGHTS, weights)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_config(weights / "scheduler")
    return weights


def test_a_sampler_without_a_shift_refuses_flow_shift_and_runs_without_it(tmp_path: Path) -> None:
    weights = _weights_with_euler(tmp_path)
    assert json.loads((weights / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == (
        "FlowMatchEulerDiscreteScheduler")
    assert not sampler_takes_shift(str(weights)) and sampler_takes_shift(str(MICRO_WEIGHTS))
    adapters = tmp_path / "adapters"  # the bundled distillation, which recommends a shift
    adapters.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(MICRO_ADAPTERS / f"fast{suffix}", adapters / f"fast{suffix}")
    with serve(tmp_path / "data", model="micro", model_path=str(weights), adapters_dir=adapters) as running:
        parameters = running.client.get("/v1/models/micro").json()["parameters"]
        assert "flow_shift" not in parameters and "guidance_scale" in parameters
        body = {"prompt": "a red ball moves right", "size": "64x64", "seconds": "1", "num_inference_steps": 3}
        refused = running.client.post("/v1/videos", json={**body, "flow_shift": 3.0})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["param"] == "flow_shift" and "leave flow_shift out" in error["message"]
        assert running.client.get("/v1/videos").json()["data"] == []  # nothing stored

        done = running.client.post("/v1/videos/sync", json=body).json()
        assert done["status"] == "completed" and done["flow_shift"] is None, done
        # The distillation adapter's recommended steps apply; its shift, which this sampler cannot take, does not.
        fast = running.client.post("/v1/videos/sync", json={**body, "num_inference_steps": None,
                                                            "loras": [{"name": "fast"}]}).json()
        assert fast.get("status") == "completed", fast
        assert (fast["num_inference_steps"], fast["flow_shift"]) == (STUDENT_STEPS, None)

