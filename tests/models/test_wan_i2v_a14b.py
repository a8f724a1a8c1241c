"""Wan2.2-I2V-A14B through the owned loop: its image conditioning by channel concat (mask and the
image's latents joined to the noise at every step, two experts) equals diffusers'
``WanImageToVideoPipeline`` on the toy layout within 1e-5, alone, batched with other image rows, and
parked and resumed; a row without an image is refused; the toy saved as the real checkpoint is (a
``WanImageToVideoPipeline`` directory without an image encoder) loads as ``wan2.2-i2v-a14b``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from image_rows import owned, starts

from reelserve.engine.denoise_loop import denoise
from reelserve.engine.parked_rows import park_bytes, resume_row
from reelserve.models import LoadOptions, get_spec, load_model
from reelserve.models.family import RowStart
from reelserve.models.image_conditioning import ChannelConcat
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_a14b_layout, build_i2v_a14b_layout
from reelserve.models.wan import LAYOUTS, load_wan_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams
from reelserve.schemas.errors import ReelserveError

SIZE = 32
# 5 steps: timesteps 999 and 923 on the high-noise expert, 818, 667 and 429 below the 900 boundary.
STEPS = 5


def params(seed: int, prompt: str = "a red circle moving right", guidance: float = 5.0,
           guidance_2: float | None = 3.0) -> GenerationParams:
    return GenerationParams(model="wan2.2-i2v-a14b", prompt=prompt, width=SIZE, height=SIZE, num_frames=5, fps=16,
                            num_inference_steps=STEPS, guidance_scale=guidance, guidance_scale_2=guidance_2, seed=seed)


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def i2v() -> tuple[Any, WanFamily]:
    pipe = build_i2v_a14b_layout(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH)


def diffusers_i2v(pipe: Any, family: WanFamily, p: GenerationParams, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return pipe(image=Image.fromarray(image), prompt_embeds=family.encode([p.prompt]),
                    negative_prompt_embeds=family.encode([p.negative_prompt]), height=p.height, width=p.width,
                    num_frames=p.num_frames, num_inference_steps=p.num_inference_steps,
                    guidance_scale=p.guidance_scale, guidance_scale_2=p.guidance_scale_2,
                    generator=torch.Generator().manual_seed(p.seed), output_type="np",
                    max_sequence_length=TINY_MAX_SEQUENCE_LENGTH).frames[0]


@pytest.fixture(scope="module")
def alone(i2v: tuple[Any, WanFamily]) -> np.ndarray:
    """Row "a" (``params(3)``, ``picture(1)``) run alone through the owned loop."""
    return owned(i2v[1], [("a", params(3))], {"a": picture(1)})["a"]


def test_the_layout_is_image_to_video_by_channel_concat(i2v: tuple[Any, WanFamily]) -> None:
    pipe, family = i2v
    assert isinstance(family.image, ChannelConcat)
    assert pipe.transformer.config.in_channels == pipe.transformer_2.config.in_channels == 36
    assert pipe.transformer.config.out_channels == pipe.vae.config.z_dim == 16
    assert pipe.config.boundary_ratio == 0.9 and not pipe.config.expand_timesteps
    with torch.inference_mode():
        condition = family.encode_first_frame(picture(1), params(3))
        image = pipe.video_processor.preprocess(Image.fromarray(picture(1)), height=SIZE, width=SIZE)
        _, expected = pipe.prepare_latents(image.to(torch.float32), 1, 16, SIZE, SIZE, 5, torch.float32,
                                           torch.device("cpu"), torch.Generator().manual_seed(3))
    assert condition.shape == (1, 4 + 16, 2, SIZE // 8, SIZE // 8)
    assert torch.equal(condition, expected)  # the pipeline's own condition, mask and latents, bit for bit
    assert torch.equal(condition[:, :4, 0], torch.ones(1, 4, SIZE // 8, SIZE // 8))
    assert not condition[:, :4, 1:].any()


def test_an_image_row_equals_the_image_to_video_pipeline_on_both_experts(
        i2v: tuple[Any, WanFamily], alone: np.ndarray) -> None:
    pipe, family = i2v
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(pipe, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
             for name in calls]
    try:
        reference = diffusers_i2v(pipe, family, params(3), picture(1))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"transformer": 2 * 2, "transformer_2": 3 * 2}  # cond and uncond, each expert's steps
    assert alone.shape == (5, SIZE, SIZE, 3)
    assert np.abs(alone - reference).max() <= 1e-5
    other = owned(family, [("a", params(3))], {"a": picture(2)})
    # The image reaches the experts: another moves the toy's video by ~5e-4, far past the tolerance
    # (the latents are the whole video here: no frame of it is the image's own latents).
    assert np.abs(alone - other["a"]).max() > 1e-4


def test_image_rows_batch_with_each_other(i2v: tuple[Any, WanFamily], alone: np.ndarray) -> None:
    _, family = i2v
    rows = [("a", params(3)), ("b", params(5, "a blue square moving up", guidance=4.0, guidance_2=2.0)),
            ("c", params(7, guidance=1.0, guidance_2=1.0))]
    images = {"a": picture(1), "b": picture(2), "c": picture(3)}
    together = owned(family, rows, images)
    assert np.abs(together["a"] - alone).max() <= 1e-5
    for key, p in rows[1:]:
        single = owned(family, [(key, p)], {key: images[key]})
        assert np.abs(together[key] - single[key]).max() <= 1e-5, key


def test_a_row_without_an_image_is_refused(i2v: tuple[Any, WanFamily]) -> None:
    _, family = i2v
    with pytest.raises(ValueError, match="row a: this model makes video from an image"):
        family.prepare_rows([("a", params(3))])
    ti2v_frame = torch.zeros(1, 16, 1, SIZE // 8, SIZE // 8)  # a TI2V-style first frame: not this layout's
    with pytest.raises(ValueError, match="condition has shape"):
        family.prepare_rows([("a", params(3))], {"a": RowStart(condition=ti2v_frame)})
    (row,) = family.prepare_rows([("a", params(3))], starts(family, [("a", params(3))], {"a": picture(1)}))
    row.condition = None
    with pytest.raises(ValueError, match="no first frame"):
        family.denoise_step([row])


def test_a_parked_image_row_resumes_to_the_same_video(i2v: tuple[Any, WanFamily], alone: np.ndarray) -> None:
    _, family = i2v
    with torch.inference_mode():
        (row,) = family.prepare_rows([("a", params(3))], starts(family, [("a", params(3))], {"a": picture(1)}))
        for _ in range(3):  # past the boundary: resumed on the low-noise expert
            family.scheduler_step([row], family.denoise_step([row]))
        resumed = resume_row(park_bytes(row, "v"), "v")
        assert resumed.step == 3 and resumed.condition is not None and torch.equal(resumed.condition, row.condition)
        frames, _ = denoise(family, [resumed])
    assert np.abs(frames["a"] - alone).max() <= 1e-5


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("i2v-a14b")
    build_i2v_a14b_layout(0).save_pretrained(path)
    return path


def test_the_saved_layout_loads_as_wan22_i2v_a14b(i2v_dir: Path, alone: np.ndarray) -> None:
    model = load_model("wan2.2-i2v-a14b", LoadOptions(device="cpu", path=str(i2v_dir)))
    pipe = model.pipeline
    assert model.limits == get_spec("wan2.2-i2v-a14b").limits
    assert model.limits.image_input == "required" and model.limits.two_experts and not model.limits.video_input
    assert pipe.config.boundary_ratio == 0.9 and pipe.transformer_2 is not None
    assert LAYOUTS["i2v-a14b"].spatial_multiple == model.limits.spatial_multiple
    loaded = WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH)
    assert np.abs(owned(loaded, [("a", params(3))], {"a": picture(1)})["a"] - alone).max() <= 1e-6
    assert model.warm_up() > 0  # on a grey first frame: the model takes no text-only row


def test_the_layout_check_tells_the_a14b_layouts_apart(i2v_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReelserveError) as caught:
        load_wan_pipeline(str(i2v_dir), "a14b", LoadOptions(device="cpu"))
    assert "transformer in_channels 36 != VAE z_dim 16" in caught.value.message
    build_a14b_layout(0).save_pretrained(tmp_path)  # text to video: its experts take the noise alone
    with pytest.raises(ReelserveError) as caught:
        load_model("wan2.2-i2v-a14b", LoadOptions(device="cpu", path=str(tmp_path)))
    message = caught.value.message
    assert "Wan2.2-I2V-A14B" in message and "transformer in_channels is 16, expected 36" in message
    assert "transformer_2 in_channels is 16, expected 36" in message
