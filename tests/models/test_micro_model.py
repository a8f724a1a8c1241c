"""The committed micro weights: they load like any checkpoint and draw what the prompt asks for."""

import logging
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.micro.adherence import GenerationSettings, evaluate_image_to_video, generate_clips
from reelserve.micro.dataset import first_frame_prompts
from reelserve.micro.evaluate import judge
from reelserve.models import LoadOptions, load_model
from reelserve.models.micro import MICRO_WEIGHTS
from reelserve.schemas.errors import ReelserveError
from reelserve.settings import Settings


@pytest.fixture(scope="module")
def micro():  # type: ignore[no-untyped-def]
    loaded = load_model("micro", LoadOptions(device="cpu"))
    loaded.pipeline.set_progress_bar_config(disable=True)
    return loaded


def _generate(loaded, prompts: list[str], seed: int = 3, guidance: float = 5.0) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    settings = GenerationSettings(seeds=(seed,), guidance=guidance, batch=len(prompts))
    return generate_clips(loaded.pipeline, prompts, [seed] * len(prompts), settings, loaded.max_sequence_length)


def test_micro_is_the_default_model() -> None:
    assert Settings().model == "micro"


def test_committed_weights_are_small_safetensors_without_the_shared_text_encoder() -> None:
    files = [p for p in MICRO_WEIGHTS.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"vae", "transformer"}  # MiniLM comes from its package
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
    assert {"training.json", "vocabulary.json", "model_index.json"} <= {p.name for p in files}


def test_loading_warns_of_nothing_the_user_could_act_on(caplog: pytest.LogCaptureFixture) -> None:
    """diffusers would say the text encoder "should be" UMT5: true of Wan, deliberate here."""
    with caplog.at_level(logging.WARNING):
        load_model("micro", LoadOptions(device="cpu"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_the_served_pipeline_is_the_ti2v_layout(micro) -> None:  # type: ignore[no-untyped-def]
    pipe = micro.pipeline
    assert type(pipe).__name__ == "WanPipeline" and pipe.config.expand_timesteps
    assert type(pipe.text_encoder).__name__ == "BertModel"  # frozen all-MiniLM-L6-v2, injected
    assert pipe.vae.config.patch_size == 2 and pipe.vae.config.z_dim == 16


@pytest.mark.parametrize(
    ("prompt", "seed", "expected"),
    [
        ("a red circle moving right", 0, ("red", "circle", "right")),
        ("a yellow square moving up", 0, ("yellow", "square", "up")),
    ],
)
def test_text_to_video_draws_what_a_simple_prompt_asks_for(micro, prompt: str, seed: int, expected) -> None:  # type: ignore[no-untyped-def]
    (clip,) = _generate(micro, [prompt], seed=seed)
    verdict = judge(clip)
    assert verdict.found and (verdict.color, verdict.shape, verdict.motion) == expected, verdict


def test_image_to_video_moves_the_given_first_frame_object(micro) -> None:  # type: ignore[no-untyped-def]
    """The same weights through ``WanImageToVideoPipeline``: the object of the given frame moves as asked."""
    cases = [c for c in first_frame_prompts() if c.scene.motion != "still"][:1]
    report = evaluate_image_to_video(micro.pipeline, micro.max_sequence_length,
                                     GenerationSettings(seeds=(0,)), cases)
    [result] = report.results
    assert result.correct == {"motion": True, "kept": True}, (cases[0], result.judgement)


def test_guidance_changes_the_output(micro) -> None:  # type: ignore[no-untyped-def]
    (guided,) = _generate(micro, ["a white triangle moving left"], guidance=5.0)
    (unguided,) = _generate(micro, ["a white triangle moving left"], guidance=1.0)
    # Ignoring guidance would make them equal; at 5 the clips differ by about two grey levels a pixel.
    assert np.abs(guided.astype(float) - unguided.astype(float)).mean() > 1.0


def test_generate_command_defaults_to_micro_and_draws_the_prompt(tmp_path: Path) -> None:
    out = tmp_path / "yellow.mp4"
    result = CliRunner().invoke(app, ["generate", "a yellow square moving up", "-o", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "model=micro size=64x64 frames=17 steps=25" in result.output
    with av.open(str(out)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (17, 64, 64, 3)
    verdict = judge(frames)
    assert verdict.found and (verdict.color, verdict.shape, verdict.motion) == ("yellow", "square", "up"), verdict


def test_missing_weights_name_the_path_option(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from reelserve.models import registry

    monkeypatch.setattr(registry, "MICRO_WEIGHTS", tmp_path / "gone")
    with pytest.raises(ReelserveError) as caught:
        load_model("micro", LoadOptions(device="cpu"))
    assert caught.value.param == "path" and "reelserve micro train" in caught.value.message
