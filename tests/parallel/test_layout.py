"""Parallel layouts: parsing (errors name what to write instead), rank coordinates and sub-groups, the
split of a sequence, and what a server with ``--parallel`` refuses before it loads anything."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reelserve.model_host import check_load_options
from reelserve.models import get_spec
from reelserve.parallel.layout import ParallelLayout, chunk_sizes
from reelserve.schemas import ReelserveError
from reelserve.settings import Settings


@pytest.mark.parametrize(("text", "expected"), [
    ("cfg=2", ParallelLayout(cfg=2)), ("ring=4", ParallelLayout(ring=4)),
    (" cfg = 2 , ulysses=2", ParallelLayout(cfg=2, ulysses=2)), ("", ParallelLayout()), ("none", ParallelLayout()),
])
def test_parse(text: str, expected: ParallelLayout) -> None:
    assert ParallelLayout.parse(text) == expected
    assert ParallelLayout.parse(str(expected)) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("cfg=3", "cfg is 1 or 2"), ("tp=2", "not a degree"), ("ring=0", "at least 1"),
    ("ring=2,ring=2", "given twice"), ("ulysses", "not a degree"),
])
def test_a_bad_layout_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ParallelLayout.parse(text)
    with pytest.raises(ValidationError, match=says):
        Settings(parallel=text)


def test_ranks_and_groups_cover_the_world_once_per_kind() -> None:
    layout = ParallelLayout(cfg=2, ulysses=2, ring=2)
    assert layout.world == 8 and layout.sequence == 4
    assert [layout.rank_of(*layout.coordinates(rank)) for rank in range(8)] == list(range(8))
    for kind, groups in layout.groups().items():
        assert sorted(rank for group in groups for rank in group) == list(range(8)), kind
    assert layout.groups()["cfg"][0] == [0, 4]  # the same tokens, the other branch
    assert layout.groups()["ring"][0] == [0, 1] and layout.groups()["ulysses"][0] == [0, 2]
    with pytest.raises(ValueError):
        layout.coordinates(8)


def test_chunks_split_like_tensor_split() -> None:
    assert chunk_sizes(27, 4) == [7, 7, 7, 6]
    assert chunk_sizes(12, 2) == [6, 6]
    assert sum(chunk_sizes(75600, 8)) == 75600


def test_ulysses_needs_whole_heads() -> None:
    ParallelLayout(ulysses=2).check_model(6)
    with pytest.raises(ValueError, match="ring=4 instead"):
        ParallelLayout(ulysses=4).check_model(6)


@pytest.mark.parametrize(("flags", "field"), [
    ({"pipeline_lanes": 2}, "pipeline_lanes"), ({"cfg_batching": True}, "cfg_batching"),
    ({"step_cache": "magcache"}, "step_cache"), ({"backend": "onnx"}, "backend"),
])
def test_a_parallel_server_refuses_what_it_cannot_run(flags: dict[str, object], field: str) -> None:
    settings = Settings(model="tiny", device="cpu", parallel="ulysses=2", **flags)
    with pytest.raises(ReelserveError) as raised:
        check_load_options(settings, get_spec("tiny"))
    assert raised.value.param == field and "--parallel ulysses=2" in raised.value.message


@pytest.mark.parametrize("cache", ["fbcache", "taylorseer", "pab"])
def test_step_caches_that_agree_across_ranks_run_on_a_sequence_split(cache: str) -> None:
    check_load_options(Settings(model="tiny", device="cpu", parallel="ulysses=2", step_cache=cache), get_spec("tiny"))


def test_cfg_batching_defaults_off_on_a_parallel_server() -> None:
    from reelserve.server import accelerations

    check_load_options(Settings(model="tiny", device="cpu", parallel="cfg=2"), get_spec("tiny"))
    assert not accelerations(Settings(parallel="cfg=2")).cfg_batching
    assert accelerations(Settings()).cfg_batching
