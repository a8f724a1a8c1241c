"""Image to video through the owned loop: a row conditioned on a first frame (the Wan2.2 TI2V
layout's ``expand_timesteps`` path) equals diffusers' ``WanImageToVideoPipeline`` on the same inputs
within 1e-5, alone and batched with other image rows and with text rows, and after being parked and
resumed. A model of another layout refuses a first frame."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image
from image_rows import owned, starts

from reelserve.engine.denoise_loop import denoise
from reelserve.engine.parked_rows import park_bytes, resume_row
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.family import RowStart
from reelserve.models.tiny import build_ti2v_5b_layout, build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams

SIZE = 32


def params(seed: int, prompt: str = "a red circle moving right", guidance: float = 5.0) -> GenerationParams:
    return GenerationParams(model="tiny", prompt=prompt, width=SIZE, height=SIZE, num_frames=5, fps=8,
                            num_inference_steps=6, guidance_scale=guidance, seed=seed)


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ti2v() -> tuple[Any, WanFamily]:
    pipe = build_ti2v_5b_layout(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH)


def diffusers_i2v(pipe: Any, family: WanFamily, p: GenerationParams, image: np.ndarray) -> np.ndarray:
    i2v = WanImageToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                                  scheduler=pipe.scheduler, transformer=pipe.transformer, image_encoder=None,
                                  image_processor=None, expand_timesteps=True)
    i2v.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return i2v(image=Image.fromarray(image), prompt_embeds=family.encode([p.prompt]),
                   negative_prompt_embeds=family.encode([p.negative_prompt]), height=p.height, width=p.width,
                   num_frames=p.num_frames, num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale,
                   generator=torch.Generator().manual_seed(p.seed), output_type="np",
                   max_sequence_length=TINY_MAX_SEQUENCE_LENGTH).frames[0]


def test_an_image_row_equals_the_image_to_video_pipeline(ti2v: tuple[Any, WanFamily]) -> None:
    pipe, family = ti2v
    reference = diffusers_i2v(pipe, family, params(3), picture(1))
    frames = owned(family, [("a", params(3))], {"a": picture(1)})
    assert np.abs(frames["a"] - reference).max() <= 1e-5
    text_only = owned(family, [("a", params(3))], {})
    assert np.abs(frames["a"] - text_only["a"]).max() > 1e-3  # the image is what made the difference


def test_image_rows_batch_with_each_other_and_with_text_rows(ti2v: tuple[Any, WanFamily]) -> None:
    _, family = ti2v
    rows = [("img1", params(3)), ("text", params(4, "a blue square moving up")), ("img2", params(5, guidance=3.0))]
    images = {"img1": picture(1), "img2": picture(2)}
    together = owned(family, rows, images)
    for key, p in rows:
        alone = owned(family, [(key, p)], {key: images[key]} if key in images else {})
        assert np.abs(together[key] - alone[key]).max() <= 1e-5, key


def test_a_parked_image_row_resumes_to_the_same_video(ti2v: tuple[Any, WanFamily]) -> None:
    _, family = ti2v
    with torch.inference_mode():
        (row,) = family.prepare_rows([("a", params(3))], starts(family, [("a", params(3))], {"a": picture(1)}))
        for _ in range(2):
            family.scheduler_step([row], family.denoise_step([row]))
        resumed = resume_row(park_bytes(row, "v"), "v")
        frames, _ = denoise(family, [resumed])
    assert resumed.condition is not None
    assert np.abs(frames["a"] - owned(family, [("a", params(3))], {"a": picture(1)})["a"]).max() <= 1e-5


def test_a_model_without_first_frame_conditioning_refuses_an_image() -> None:
    family = WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH)
    condition = torch.zeros(1, 16, 1, SIZE // 8, SIZE // 8)
    with pytest.raises(ValueError, match="takes no first frame"):
        family.prepare_rows([("a", params(3))], {"a": RowStart(condition=condition)})
