"""Accelerations from the outside: jobs say what they run with, presets set the default step count
(never a request's own), the cache key follows exactly the settings that change pixels, and options
that cannot run keep the server from becoming ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import final_video, serve
from typer.testing import CliRunner

from reelserve.cache.key import cache_key
from reelserve.cli import app
from reelserve.models import get_spec
from reelserve.models.options import resolve_placement
from reelserve.schemas import GenerationParams
from reelserve.schemas.errors import ReelserveError
from reelserve.model_host import load_options
from reelserve.server import Server, accelerations_in_force, output_settings, served_limits
from reelserve.settings import Settings

SMALL = {"size": "32x32", "num_frames": 5}


def test_jobs_report_the_accelerations_they_run_with(tmp_path: Path) -> None:
    with serve(tmp_path / "data", preset="quality") as running:
        model = running.server.model
        assert model is not None and model.accelerated is not None
        merged_in_warm_up = model.accelerated.cfg[0].batched
        created = running.client.post("/v1/videos", json={"prompt": "a red fox in the snow", **SMALL})
        assert created.status_code == 200, created.text
        assert created.json()["accelerations"] == ["preset=quality", "cfg_batching", "shared_time_embedding", "channels_last", "fused_ffn"]
        done = final_video(running, created.json()["id"])
        assert done["status"] == "completed"
        assert done["accelerations"] == ["preset=quality", "cfg_batching", "shared_time_embedding", "channels_last", "fused_ffn"]
        assert done["num_inference_steps"] == get_spec("tiny").limits.default_steps  # quality runs them all
        # What the job says is what ran: its steps merged their CFG passes.
        assert model.accelerated.cfg[0].batched == merged_in_warm_up + done["num_inference_steps"]
        assert model.accelerated.fused_ffn == model.pipeline.transformer.config.num_layers  # a float32 CPU model
    assert accelerations_in_force(Settings(model="tiny")) == ["cfg_batching", "shared_time_embedding", "channels_last", "fused_ffn"]  # the serving defaults
    plain = Settings(model="tiny", cfg_batching=False, shared_time_embedding=False, channels_last=False, fused_ffn=False)
    assert accelerations_in_force(plain) == []  # plain eager: nothing to report


def test_a_preset_sets_the_default_steps_and_leaves_requested_steps_alone(tmp_path: Path) -> None:
    tiny = get_spec("tiny")
    fast_steps = served_limits(tiny, Settings(model="tiny", preset="fast")).default_steps
    assert fast_steps == 3 < tiny.limits.default_steps == 4  # 80 % of tiny's 4, rounded
    assert served_limits(tiny, Settings(model="tiny")) == tiny.limits

    with serve(tmp_path / "data", preset="fast") as running:
        omitted = running.client.post("/v1/videos", json={"prompt": "waves on a beach", **SMALL}).json()
        explicit = running.client.post(
            "/v1/videos", json={"prompt": "waves on a beach", "num_inference_steps": 6, **SMALL}
        ).json()
        for created, steps in ((omitted, fast_steps), (explicit, 6)):
            done = final_video(running, created["id"])
            assert (done["status"], done["num_inference_steps"]) == ("completed", steps)
            assert done["accelerations"] == ["preset=fast", "cfg_batching", "shared_time_embedding", "step_cache=magcache:0.06", "channels_last", "fused_ffn"]


def test_the_cache_key_follows_the_settings_that_change_pixels() -> None:
    params = GenerationParams(
        model="tiny", prompt="a red fox", width=32, height=32, num_frames=5, fps=8, num_inference_steps=4,
        guidance_scale=5.0, seed=1,
    )

    def key(**settings: Any) -> str:
        return cache_key(params, "tiny:test", output_settings(Settings(model="tiny", **settings)))

    assert key(step_cache="fbcache") != key(step_cache="none") == key()
    assert key(step_cache="fbcache", step_cache_threshold=0.1) != key(step_cache="fbcache", step_cache_threshold=0.2)
    # Left unset, the threshold is the model's resolved one (0.05 for uncalibrated tiny): the same floats.
    assert key(step_cache="fbcache") == key(step_cache="fbcache", step_cache_threshold=0.05)
    assert key(cfg_batching=False) != key() == key(cfg_batching=True)  # on unless turned off
    assert key(shared_time_embedding=False) != key() == key(shared_time_embedding=True)
    # The options count, not the preset's name.
    assert key(preset="quality") == key(cfg_batching=True, channels_last=True) == key() != key(channels_last=False)
    assert key(fused_ffn=False) != key() == key(fused_ffn=True)
    assert key(vae_slicing=True) == key()  # memory only


def test_options_that_cannot_run_stop_the_server_at_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", device="cpu", model="tiny", backend="onnx", step_cache="fbcache")
    with pytest.raises(ReelserveError) as refused:
        resolve_placement(load_options(settings))
    assert refused.value.param == "backend"

    with pytest.raises(ReelserveError) as refused:
        Server(settings)  # before anything listens or loads
    assert refused.value.param == "backend" and "step_cache" in refused.value.message
    two_experts = Settings(data_dir=tmp_path / "data", device="cpu", model="wan2.2-t2v-a14b", step_cache="magcache")
    with pytest.raises(ReelserveError) as refused:
        Server(two_experts)
    assert refused.value.param == "step_cache"

    result = CliRunner().invoke(app, ["serve", "--model", "tiny", "--group-offload", "--device", "cpu",
                                      "--data-dir", str(tmp_path / "cli")])
    assert result.exit_code == 2
    assert "group_offload" in result.output
