"""Several models behind one server: micro and tiny under a device-memory budget that holds one of them
(micro's 110 MiB of weights alone; tiny's 0.3 MiB more do not fit). Interleaved requests for both all
complete, each on its own model, with the swaps counted and timed; the model objects say which is
loaded; a realtime job for the model off the device with a deadline shorter than its swap is refused
(429, Retry-After) and stores nothing; an unknown model is a 4xx naming both."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
from support import ADMIN, auth, final_video, gate_pipeline, serve, serve_in_mode, wait_until

BODY = {"prompt": "a red circle moving right", "num_inference_steps": 4, "seed": 1}


def frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_two_models_share_the_device_by_swapping(tmp_path: Path) -> None:
    with serve(tmp_path, model="micro,tiny", device_memory_mb=110, max_batch_size=2, admin_keys=[ADMIN],
               model_overrides="micro:preset=fast;tiny:cfg_batching=false") as server:
        models = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
        assert set(models) == {"micro", "tiny"}
        # Each model runs with its own overrides: micro the fast preset, tiny without CFG batching.
        assert "preset=fast" in models["micro"]["accelerations"] and "preset=fast" not in models["tiny"]["accelerations"]
        assert "cfg_batching" not in models["tiny"]["accelerations"]
        assert (models["micro"]["loaded"], models["tiny"]["loaded"]) == (False, True)  # tiny loaded last
        assert models["micro"]["swap_in_s"] > 0 and models["tiny"]["swap_in_s"] == 0
        assert server.client.get("/v1/models/tiny").json()["id"] == "tiny"

        # Refused before anything is stored: the swap alone is longer than the deadline.
        before = len(server.client.get("/v1/videos").json()["data"])
        late = server.client.post("/v1/videos", json={**BODY, "model": "micro", "priority": "realtime",
                                                      "deadline_seconds": models["micro"]["swap_in_s"] / 2})
        assert late.status_code == 429 and int(late.headers["retry-after"]) >= 1
        assert "to bring the model onto the device" in late.json()["error"]["message"]
        assert len(server.client.get("/v1/videos").json()["data"]) == before

        unknown = server.client.post("/v1/videos", json={**BODY, "model": "wan2.2-ti2v-5b"})
        assert unknown.status_code in (400, 404, 422) and unknown.json()["error"]["param"] == "model"
        assert "'micro', 'tiny'" in unknown.json()["error"]["message"]

        ids = [server.client.post("/v1/videos", json={**BODY, "model": model, "seed": i}).json()["id"]
               for i, model in enumerate(["micro", "tiny", "micro", "tiny", None])]
        videos = [final_video(server, video_id) for video_id in ids]
        metrics = server.client.get("/metrics").text
        workers = server.client.get("/v1/admin/stats", headers=auth(ADMIN)).json()["workers"]
        assert {(w["name"], w["model"]) for w in workers} == {("embedded-micro", "micro"), ("embedded-tiny", "tiny")}
        contents = [server.client.get(f"/v1/videos/{video_id}/content").content for video_id in ids]
    assert [v["status"] for v in videos] == ["completed"] * 5, videos
    assert [v["model"] for v in videos] == ["micro", "tiny", "micro", "tiny", "micro"]  # none: the first model
    assert [frames(data) for data in contents] == [v["num_frames"] for v in videos]
    assert any(v["timings"]["swap_s"] and v["timings"]["swap_s"] > 0 for v in videos)
    swaps_in = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("reelserve_model_swaps_total") and 'direction="in"' in line)
    assert swaps_in >= 2  # micro came in, and tiny came back at least once
    assert 'reelserve_model_swap_seconds_count{direction="in",model="micro"}' in metrics


def test_several_models_in_the_distributed_mode(tmp_path: Path) -> None:
    """An API and a worker, each given both models: the API queues each job on its model's streams, the
    worker runs both under the budget, swapping. The API runs no model, yet knows from the worker's
    heartbeats which weights are out and what bringing them in costs, and its admission counts it."""
    with serve_in_mode("distributed", tmp_path, model="micro,tiny", device_memory_mb=110) as server:
        def models() -> dict[str, dict]:
            return {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}

        assert set(models()) == {"micro", "tiny"}
        seen = wait_until(lambda: (m := models())["tiny"]["loaded"] and m)  # tiny loaded last: micro is out
        assert not seen["micro"]["loaded"] and seen["micro"]["swap_in_s"] > 0 and seen["tiny"]["swap_in_s"] == 0
        late = server.client.post("/v1/videos", json={**BODY, "model": "micro", "priority": "realtime",
                                                      "deadline_seconds": seen["micro"]["swap_in_s"] / 2})
        assert late.status_code == 429 and int(late.headers["retry-after"]) >= 1
        assert "to bring the model onto the device" in late.json()["error"]["message"]
        assert server.client.get("/v1/videos").json()["data"] == []  # refused before anything was stored
        ids = [server.client.post("/v1/videos", json={**BODY, "model": model, "seed": i}).json()["id"]
               for i, model in enumerate(["micro", "tiny", "micro"])]
        videos = [final_video(server, video_id) for video_id in ids]
        contents = [server.client.get(f"/v1/videos/{video_id}/content").content for video_id in ids]
        metrics = httpx.get(f"{server.worker_url}/metrics", timeout=10).text
    assert [(v["status"], v["model"]) for v in videos] == [("completed", "micro"), ("completed", "tiny"),
                                                          ("completed", "micro")], videos
    assert [frames(data) for data in contents] == [v["num_frames"] for v in videos]
    assert 'reelserve_model_swaps_total{direction="in",model="micro"}' in metrics


def test_each_model_has_its_own_circuit_breaker(tmp_path: Path) -> None:
    """micro's batches failing open micro's circuit; tiny's jobs are still taken and run."""
    with serve(tmp_path, model="micro,tiny", circuit_failures=1, circuit_cooldown_s=600) as server:
        gate_pipeline(server)  # the default model's (micro's) prompts containing "boom" raise
        failed = final_video(server, server.client.post("/v1/videos", json={**BODY, "prompt": "boom"}).json()["id"])
        assert failed["status"] == "failed" and failed["model"] == "micro"
        refused = server.client.post("/v1/videos", json={**BODY, "model": "micro"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
        assert server.client.get("/readyz").status_code == 200  # tiny still takes work
        taken = server.client.post("/v1/videos", json={**BODY, "model": "tiny"})
        assert taken.status_code == 200, taken.text
        assert final_video(server, taken.json()["id"])["status"] == "completed"
        metrics = server.client.get("/metrics").text
    assert 'reelserve_circuit_state{model="micro"} 2.0' in metrics
    assert 'reelserve_circuit_state{model="tiny"} 0.0' in metrics
