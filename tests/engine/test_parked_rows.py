"""Parked rows as bytes: what is refused. That a resumed row ends as if never parked is in
tests/models/test_wan_family.py, for every Wan layout, and in another process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from reelserve.engine.parked_rows import StaleParkedRow, park_bytes, resume_row
from reelserve.models.family import Row
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams

PARAMS = GenerationParams(model="tiny", fps=8, prompt="a lighthouse", negative_prompt="", width=32, height=32,
                          num_frames=5, num_inference_steps=4, guidance_scale=5.0, seed=1)


@pytest.fixture(scope="module")
def row() -> Row:
    family = WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH)
    with torch.inference_mode():
        (prepared,) = family.prepare_rows([("job0", PARAMS)])
        family.scheduler_step([prepared], family.denoise_step([prepared]))
    return prepared


def test_a_row_comes_back_whole(row: Row) -> None:
    back = resume_row(park_bytes(row, "tiny:code:1"), "tiny:code:1")
    assert (back.key, back.params, back.step) == ("job0", PARAMS, 1)
    assert torch.equal(back.latents, row.latents) and torch.equal(back.timesteps, row.timesteps)
    assert type(back.scheduler) is type(row.scheduler) and back.scheduler.step_index == row.scheduler.step_index
    assert len(back.scheduler.model_outputs) == len(row.scheduler.model_outputs)


def test_a_row_parked_by_another_model_version_is_refused(row: Row) -> None:
    with pytest.raises(StaleParkedRow, match="tiny:code:1"):
        resume_row(park_bytes(row, "tiny:code:1"), "tiny:sha256:0123456789abcdef")


def test_bytes_that_are_not_a_parked_row_are_refused() -> None:
    with pytest.raises(ValueError, match="not a parked row"):
        resume_row(b"not a parked row at all", "tiny:code:1")


class Payload:  # anything with code behind it: torch.load(weights_only=True) never builds it
    pass


def test_a_pickled_object_is_refused_not_built(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"format": 1, "model_version": "tiny:code:1", "payload": Payload()}, buffer)
    with pytest.raises(ValueError, match="not a parked row"):
        resume_row(buffer.getvalue(), "tiny:code:1")


def test_a_scheduler_class_that_is_not_a_diffusers_scheduler_is_refused(row: Row) -> None:
    state = torch.load(io.BytesIO(park_bytes(row, "tiny:code:1")), weights_only=True)
    state["scheduler_class"] = "KarrasDiffusionSchedulers"  # in diffusers.schedulers, but an enum
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(ValueError, match="not a diffusers scheduler"):
        resume_row(buffer.getvalue(), "tiny:code:1")


def test_a_parked_row_holds_its_own_conditioning_not_its_batch_mates() -> None:
    # A row's embeddings are views of its batch's tensor: the bytes must not carry the other rows'.
    family = WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH)
    mates = [(f"job{i}", PARAMS.model_copy(update={"prompt": f"prompt number {i}", "seed": i})) for i in range(4)]
    with torch.inference_mode():
        alone = park_bytes(family.prepare_rows(mates[:1])[0], "tiny:code:1")
        in_batch = park_bytes(family.prepare_rows(mates)[0], "tiny:code:1")
    assert len(in_batch) < 1.05 * len(alone)
