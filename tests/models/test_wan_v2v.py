"""Re-drawing a clip through the owned loop (video to video, and remix, which starts from a video's
final latents): a row with a source and a strength equals diffusers' ``WanVideoToVideoPipeline`` on
the same inputs within 1e-5, alone and batched with rows of other strengths and with text rows, and
after being parked and resumed; it runs ``int(steps * strength)`` steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanVideoToVideoPipeline
from PIL import Image

from reelserve.engine.denoise_loop import denoise
from reelserve.engine.parked_rows import park_bytes, resume_row
from reelserve.models.family import RowStart
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_tiny_pipeline
from reelserve.models.wan_family import WanFamily, first_step
from reelserve.schemas import GenerationParams

SIZE, FRAMES, STEPS = 32, 5, 8


def params(seed: int, strength: float | None = 0.5, prompt: str = "a red circle moving right",
           guidance: float = 5.0) -> GenerationParams:
    return GenerationParams(model="tiny", prompt=prompt, width=SIZE, height=SIZE, num_frames=FRAMES, fps=8,
                            num_inference_steps=STEPS, guidance_scale=guidance, seed=seed, strength=strength,
                            source=None if strength is None else "sha256:test")


def clip(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, WanFamily]:
    pipe = build_tiny_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH)


def diffusers_v2v(pipe: Any, family: WanFamily, p: GenerationParams, frames: np.ndarray) -> np.ndarray:
    v2v = WanVideoToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                                  scheduler=pipe.scheduler, transformer=pipe.transformer)
    v2v.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return v2v(video=[Image.fromarray(frame) for frame in frames], prompt_embeds=family.encode([p.prompt]),
                   negative_prompt_embeds=family.encode([p.negative_prompt]), height=p.height, width=p.width,
                   num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale, strength=p.strength,
                   generator=torch.Generator().manual_seed(p.seed), output_type="np",
                   max_sequence_length=TINY_MAX_SEQUENCE_LENGTH).frames[0]


def prepared(family: WanFamily, rows: list[tuple[str, GenerationParams]], clips: dict[str, np.ndarray]) -> list:
    p = dict(rows)
    with torch.inference_mode():
        starts = {key: RowStart(source=family.encode_video(frames, p[key])) for key, frames in clips.items()}
        return family.prepare_rows(rows, starts)


def owned(family: WanFamily, rows: list[tuple[str, GenerationParams]], clips: dict[str, np.ndarray]) -> dict:
    with torch.inference_mode():
        frames, stopped = denoise(family, prepared(family, rows, clips), mixed_steps=True)
    assert stopped == {}
    return frames


@pytest.mark.parametrize("strength", [0.5, 0.8, 1.0])
def test_a_redrawn_row_equals_the_video_to_video_pipeline(tiny: tuple[Any, WanFamily], strength: float) -> None:
    pipe, family = tiny
    p = params(3, strength)
    reference = diffusers_v2v(pipe, family, p, clip(1))
    (row,) = prepared(family, [("a", p)], {"a": clip(1)})
    assert len(row.timesteps) == int(STEPS * strength) and first_step(p) == STEPS - int(STEPS * strength)
    frames = owned(family, [("a", p)], {"a": clip(1)})
    assert np.abs(frames["a"] - reference).max() <= 1e-5


def test_redrawn_rows_batch_with_other_strengths_and_with_text_rows(tiny: tuple[Any, WanFamily]) -> None:
    _, family = tiny
    rows = [("half", params(3, 0.5)), ("text", params(4, None, "a blue square moving up")),
            ("most", params(5, 0.75, guidance=3.0))]
    clips = {"half": clip(1), "most": clip(2)}
    together = owned(family, rows, clips)
    for key, p in rows:
        alone = owned(family, [(key, p)], {key: clips[key]} if key in clips else {})
        assert np.abs(together[key] - alone[key]).max() <= 1e-5, key


def test_a_parked_redrawn_row_resumes_to_the_same_video(tiny: tuple[Any, WanFamily]) -> None:
    _, family = tiny
    with torch.inference_mode():
        (row,) = prepared(family, [("a", params(3, 0.75))], {"a": clip(1)})
        for _ in range(2):
            family.scheduler_step([row], family.denoise_step([row]))
        resumed = resume_row(park_bytes(row, "v"), "v")
        frames, _ = denoise(family, [resumed])
    assert np.abs(frames["a"] - owned(family, [("a", params(3, 0.75))], {"a": clip(1)})["a"]).max() <= 1e-5


def test_a_strength_without_a_source_is_refused(tiny: tuple[Any, WanFamily]) -> None:
    _, family = tiny
    with pytest.raises(ValueError, match="no source latents"):
        family.prepare_rows([("a", params(3, 0.5))])
