"""A prompt the micro model was never trained on still runs, and its video says so."""

from __future__ import annotations

from pathlib import Path

from support import serve


def test_unknown_words_run_with_a_warning_and_known_ones_without(tmp_path: Path) -> None:
    with serve(tmp_path / "data", model="micro") as running:
        odd = running.client.post("/v1/videos", params={"wait": 60},
                                  json={"prompt": "a cat playing the piano", "num_inference_steps": 2})
        assert odd.status_code == 200 and odd.json()["status"] == "completed"
        [warning] = odd.json()["warnings"]
        assert "(cat, playing, piano)" in warning and "circle" in warning
        again = running.client.get(f"/v1/videos/{odd.json()['id']}").json()
        assert again["warnings"] == [warning]  # stored with the job, not only in the first answer
        plain = running.client.post("/v1/videos", json={"prompt": "a red circle moving right"}).json()
        assert plain["warnings"] == []
        # A legal shape the weights were never trained at runs too, and says so; the model object
        # offers the trained shapes and says what the model draws.
        wide = running.client.post("/v1/videos", params={"wait": 60}, json={
            "prompt": "a red circle moving right", "size": "96x64", "num_frames": 9, "num_inference_steps": 2})
        assert wide.status_code == 200 and wide.json()["status"] == "completed"
        [shape] = wide.json()["warnings"]
        assert "size 96x64 (trained: 64x64)" in shape and "num_frames 9 (trained: 17)" in shape
        model = running.client.get("/v1/models/micro").json()
        assert model["parameters"]["width"]["offered"] == [64] and model["parameters"]["num_frames"]["offered"] == [17]
        assert "triangle" in model["about"] and "a yellow square moving up" in model["examples"]
