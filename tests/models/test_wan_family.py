"""The owned denoising loop (``WanFamily`` through ``engine.denoise_loop``) against diffusers' own
``WanPipeline.__call__``, for every Wan layout served, on the same seeds: equal within 1e-5."""

from __future__ import annotations

from typing import Any

import subprocess
import sys

import numpy as np
import pytest
import torch

from reelserve.engine.denoise_loop import Boundary, denoise
from reelserve.engine.parked_rows import park_bytes, resume_row
from reelserve.models import LoadOptions, load_model
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_a14b_layout, build_ti2v_5b_layout, build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams

LAYOUTS = {
    "tiny": (lambda: build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH, 32),
    "ti2v-5b": (lambda: build_ti2v_5b_layout(0), TINY_MAX_SEQUENCE_LENGTH, 32),
    "a14b": (lambda: build_a14b_layout(0), TINY_MAX_SEQUENCE_LENGTH, 32),
    "micro": (lambda: load_model("micro", LoadOptions(device="cpu")).pipeline, 32, 64),
}
PROMPTS = ["a red circle moving right", "a blue square moving up"]


def params(size: int, guidance: float, seed: int, prompt: str, steps: int = 6) -> GenerationParams:
    return GenerationParams(model="tiny", fps=8, prompt=prompt, negative_prompt="", width=size, height=size, num_frames=5,
                            num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                            guidance_scale_2=guidance if guidance > 1 else None)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> tuple[str, Any, int, int]:
    build, max_len, size = LAYOUTS[request.param]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    return request.param, pipe, max_len, size


def pipeline_call(pipe: Any, family: WanFamily, rows: list[GenerationParams]) -> np.ndarray:
    first = rows[0]
    extra: dict[str, Any] = {}
    if first.guidance_scale > 1:
        extra["negative_prompt_embeds"] = family.encode([p.negative_prompt for p in rows])
    if pipe.config.boundary_ratio is not None:
        extra["guidance_scale_2"] = first.guidance_scale_2 or first.guidance_scale
    with torch.inference_mode():
        return pipe(
            prompt_embeds=family.encode([p.prompt for p in rows]), height=first.height, width=first.width,
            num_frames=first.num_frames, num_inference_steps=first.num_inference_steps,
            guidance_scale=first.guidance_scale, output_type="np", max_sequence_length=family.max_sequence_length,
            generator=[torch.Generator().manual_seed(p.seed) for p in rows], **extra,
        ).frames


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_the_owned_loop_equals_the_pipeline_call(layout: tuple[str, Any, int, int], guidance: float) -> None:
    name, pipe, max_len, size = layout
    family = WanFamily(pipe, max_len)
    rows = [params(size, guidance, seed, prompt) for seed, prompt in zip((3, 11), PROMPTS, strict=True)]
    reference = pipeline_call(pipe, family, rows)
    with torch.inference_mode():
        frames, stopped = denoise(family, family.prepare_rows([(f"job{i}", p) for i, p in enumerate(rows)]))
    assert stopped == {}
    for i in range(len(rows)):
        assert np.abs(frames[f"job{i}"] - reference[i]).max() <= 1e-5, (name, i)


def test_a_row_leaves_at_any_step_and_the_others_are_unchanged(layout: tuple[str, Any, int, int]) -> None:
    _, pipe, max_len, size = layout
    family = WanFamily(pipe, max_len)
    rows = [params(size, 5.0, seed, prompt) for seed, prompt in zip((3, 11), PROMPTS, strict=True)]
    steps_seen: list[tuple[list[str], int]] = []

    def stop_job0_after_two(key: str) -> bool:
        return key == "job0" and len(steps_seen) >= 2

    with torch.inference_mode():
        alone, _ = denoise(family, family.prepare_rows([("job1", rows[1])]))
        frames, stopped = denoise(family, family.prepare_rows([("job0", rows[0]), ("job1", rows[1])]),
                                  should_stop=stop_job0_after_two,
                                  on_step=lambda keys, step, total: steps_seen.append((keys, step)))
    assert stopped == {"job0": 2} and set(frames) == {"job1"}
    assert steps_seen[1] == (["job0", "job1"], 2) and steps_seen[2] == (["job1"], 3)
    # Against a run alone, not the same batch: a batch's size changes the GEMMs' summation order
    # (2e-5 seen on micro), as the runner's batched-row tests allow.
    assert np.abs(frames["job1"] - alone["job1"]).max() <= 1e-4


@pytest.mark.parametrize("mixed_steps", [True, False])
def test_a_row_that_joins_a_running_batch_ends_as_if_it_ran_alone(
        layout: tuple[str, Any, int, int], mixed_steps: bool) -> None:
    """Continuous batching: a row with a step count of its own joins after the batch's second step.
    With ``mixed_steps`` it shares every evaluation from then on (each row at its own timestep);
    without (a step cache's runs), rows share a call only at the same step of the same schedule."""
    name, pipe, max_len, size = layout
    family = WanFamily(pipe, max_len)
    first, joiner = params(size, 5.0, 3, PROMPTS[0]), params(size, 5.0, 11, PROMPTS[1], steps=4)
    evaluated: list[list[int]] = []  # each evaluation: the steps of its rows
    step = family.denoise_step

    def counting(rows: list[Any]) -> torch.Tensor:
        evaluated.append([row.step for row in rows])
        return step(rows)

    def admit(live: list[Any]) -> list[Any]:
        if [row.key for row in live] == ["job0"] and live[0].step == 2:
            return family.prepare_rows([("job1", joiner)])
        return []

    with torch.inference_mode():
        alone = {key: denoise(family, family.prepare_rows([(key, p)]))[0][key]
                 for key, p in (("job0", first), ("job1", joiner))}
        family.denoise_step = counting  # type: ignore[method-assign]
        frames, stopped = denoise(family, family.prepare_rows([("job0", first)]), boundary=Boundary(admit=admit),
                                  mixed_steps=mixed_steps)
    assert stopped == {} and set(frames) == {"job0", "job1"}
    # A batch's size changes the GEMMs' summation order, as for any batch: 1.2-2.0e-5 seen on micro
    # (wider layers), under 1.5e-6 on the toy layouts.
    for key in frames:
        assert np.abs(frames[key] - alone[key]).max() <= (5e-5 if name == "micro" else 1e-5), (name, key)
    if name == "a14b":  # rows on either side of the expert boundary take separate evaluations
        assert sum(len(rows) for rows in evaluated) == 6 + 4
    elif mixed_steps:
        assert evaluated == [[0], [1], [2, 0], [3, 1], [4, 2], [5, 3]]
    else:
        # The rows take turns (the one that waited longest goes next); different schedules never share.
        assert evaluated == [[0], [1], [0], [2], [1], [3], [2], [4], [3], [5]]


@pytest.mark.parametrize("kept", ["in memory", "as bytes"])
def test_a_parked_row_resumes_to_the_video_it_would_have_made(layout: tuple[str, Any, int, int], kept: str) -> None:
    """Preemption that loses no work: a row parked after its third step (its batch-mate runs on),
    resumed later, alone or from its bytes, ends as the uninterrupted run of that batch would."""
    name, pipe, max_len, size = layout
    family = WanFamily(pipe, max_len)
    rows = [params(size, 5.0, seed, prompt) for seed, prompt in zip((3, 11), PROMPTS, strict=True)]
    boundary = Boundary(park=lambda live: ["job0"] if live[0].step == 3 and len(live) == 2 else [])
    with torch.inference_mode():
        alone, _ = denoise(family, family.prepare_rows([("job0", rows[0])]))
        frames, _ = denoise(family, family.prepare_rows([("job0", rows[0]), ("job1", rows[1])]), boundary=boundary)
        assert set(frames) == {"job1"} and list(boundary.parked) == ["job0"]
        parked = boundary.parked["job0"]
        if kept == "as bytes":
            parked = resume_row(park_bytes(parked, "toy:1"), "toy:1")
        assert parked.step == 3
        resumed, _ = denoise(family, [parked])
    # Its first three steps ran in a batch of two, its last three alone: the batch-size effect only.
    assert np.abs(resumed["job0"] - alone["job0"]).max() <= (5e-5 if name == "micro" else 1e-5), name


def test_a_parked_row_resumes_in_another_process(tmp_path: Any) -> None:
    """A drained worker's row picked up elsewhere: the bytes alone, in a fresh interpreter, give the
    same video as the run that was never interrupted."""
    family = WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH)
    row = params(32, 5.0, 5, PROMPTS[0])
    with torch.inference_mode():
        alone, _ = denoise(family, family.prepare_rows([("job0", row)]))
        boundary = Boundary(park=lambda live: ["job0"] if live[0].step == 2 else [])
        denoise(family, family.prepare_rows([("job0", row)]), boundary=boundary)
    (tmp_path / "parked.bin").write_bytes(park_bytes(boundary.parked["job0"], "tiny:code"))
    subprocess.run([sys.executable, "-c", _RESUME_ELSEWHERE, str(tmp_path)], check=True, timeout=300)
    assert np.abs(np.load(tmp_path / "frames.npy") - alone["job0"]).max() <= 1e-6


_RESUME_ELSEWHERE = """
import sys
from pathlib import Path
import numpy as np, torch
from reelserve.engine.denoise_loop import denoise
from reelserve.engine.parked_rows import resume_row
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
out = Path(sys.argv[1])
family = WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH)
with torch.inference_mode():
    frames, _ = denoise(family, [resume_row((out / "parked.bin").read_bytes(), "tiny:code")])
np.save(out / "frames.npy", frames["job0"])
"""


# Step caches are refused on the two-expert A14B layout, so it has no case here.
@pytest.mark.parametrize("layout", ["tiny", "ti2v-5b", "micro"], indirect=True)
def test_a_step_cache_skips_the_same_work_in_the_owned_loop(layout: tuple[str, Any, int, int]) -> None:
    """diffusers' First-Block Cache hooks see the same cond/uncond contexts as in the pipeline."""
    from diffusers.hooks import FirstBlockCacheConfig

    name, pipe, max_len, size = layout
    family = WanFamily(pipe, max_len)
    rows = [params(size, 5.0, seed, prompt, steps=10) for seed, prompt in zip((3, 11), PROMPTS, strict=True)]
    uncached = pipeline_call(pipe, family, rows)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    try:
        reference = pipeline_call(pipe, family, rows)
        pipe.transformer._reset_stateful_cache()
        with torch.inference_mode():
            frames, _ = denoise(family, family.prepare_rows([(f"job{i}", p) for i, p in enumerate(rows)]))
    finally:
        pipe.transformer.disable_cache()
    for i in range(len(rows)):
        assert np.abs(frames[f"job{i}"] - reference[i]).max() <= 1e-5, (name, i)
    assert np.abs(reference - uncached).max() > 1e-3, "the cache skipped nothing: this test would prove nothing"
