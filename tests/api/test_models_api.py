"""``/v1/models``: what a client needs to build a form that never offers a value the API rejects."""

from __future__ import annotations

from pathlib import Path

from support import RunningServer, serve

from reelserve.models import get_spec


def test_the_model_object_lists_defaults_and_ranges(server: RunningServer) -> None:
    listed = server.client.get("/v1/models")
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["tiny"]
    model = server.client.get("/v1/models/tiny").json()
    assert model == body["data"][0]
    limits = get_spec("tiny").limits
    p = model["parameters"]
    assert (p["width"]["multiple_of"], p["width"]["max"], p["width"]["default"]) == (16, 256, limits.default_width)
    assert (p["num_frames"]["form"], p["num_frames"]["max"]) == ("4n+1", limits.max_frames)
    assert (p["num_inference_steps"]["max"], p["num_inference_steps"]["default"]) == (50, limits.default_steps)
    assert p["priority"]["enum"] == ["realtime", "standard", "batch"] and p["priority"]["default"] == "standard"
    assert "guidance_scale_2" not in p  # one transformer: the field would be refused

    # The edges it states are exactly what the API accepts and refuses.
    at_edge = {"prompt": "edge", "width": p["width"]["max"], "height": p["height"]["min"],
               "num_inference_steps": p["num_inference_steps"]["max"], "num_frames": 5, "seed": 1}
    assert server.client.post("/v1/videos", json=at_edge).status_code == 200
    over = {**at_edge, "num_inference_steps": p["num_inference_steps"]["max"] + 1}
    refused = server.client.post("/v1/videos", json=over)
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "num_inference_steps"


def test_an_unknown_model_id_is_a_clear_404(server: RunningServer) -> None:
    missing = server.client.get("/v1/models/wan2.2-ti2v-5b")
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model" and "tiny" in missing.json()["error"]["message"]


def test_a_preset_shows_in_the_model_object(tmp_path: Path) -> None:
    with serve(tmp_path / "data", preset="fast") as running:
        model = running.client.get("/v1/models/tiny").json()
    assert model["parameters"]["num_inference_steps"]["default"] == 3  # 80 % of tiny's 4
    assert model["accelerations"][0] == "preset=fast"


def test_models_need_a_key_when_keys_are_set(tmp_path: Path) -> None:
    with serve(tmp_path / "data", api_keys=["k"]) as running:
        assert running.client.get("/v1/models").status_code == 401
        assert running.client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
