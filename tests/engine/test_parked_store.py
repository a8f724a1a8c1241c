"""ParkedStore: parked rows kept until their jobs run again, within a byte bound (oldest dropped)."""

from __future__ import annotations

import copy

import pytest
import torch

from reelserve.engine.parked_store import ParkedStore, row_bytes
from reelserve.engine.runner import PipelineRunner
from reelserve.models.family import Row
from reelserve.schemas import GenerationParams

PARAMS = GenerationParams(model="tiny", prompt="a fox", width=32, height=32, num_frames=5, fps=8,
                          num_inference_steps=4, guidance_scale=5.0, seed=1)


@pytest.fixture(scope="module")
def row(tiny_model) -> Row:  # type: ignore[no-untyped-def]
    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    return runner.family.prepare_rows([("a", PARAMS)])[0]


def test_a_rows_size_counts_its_tensors_and_what_its_scheduler_keeps(row: Row) -> None:
    own = sum(t.numel() * t.element_size() for t in (row.latents, row.prompt_embeds, row.negative_embeds, row.timesteps))
    fresh = copy.deepcopy(row)
    fresh.scheduler.model_outputs = [None, None]
    assert row_bytes(fresh) >= own
    stepped = copy.deepcopy(fresh)
    stepped.scheduler.model_outputs = [torch.zeros_like(row.latents), torch.zeros_like(row.latents)]
    assert row_bytes(stepped) - row_bytes(fresh) == 2 * row.latents.numel() * row.latents.element_size()


def test_rows_come_back_once_and_the_oldest_go_past_the_bound(row: Row) -> None:
    size = row_bytes(row)
    store = ParkedStore(limit_bytes=2 * size)
    assert store.put("a", row) == [] and store.put("b", copy.deepcopy(row)) == []
    assert store.put("c", copy.deepcopy(row)) == ["a"]  # three do not fit: the oldest is dropped
    assert "a" not in store and store.take("a") is None and store.dropped == 1
    assert store.take("b") is not None and store.take("b") is None  # taken once
    assert len(store) == 1 and store.bytes == size
    assert ParkedStore(limit_bytes=size - 1).put("big", row) == ["big"]  # alone too large: not kept
