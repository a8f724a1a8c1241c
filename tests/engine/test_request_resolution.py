"""``RequestResolver``'s remix against the served weights: what the source ran with that these weights'
sampler cannot take is left out, unless the remix itself asks for it (then a 422 names it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelserve.engine.request_resolution import RequestResolver
from reelserve.engine.storage_keys import video_key
from reelserve.models.specs import get_spec
from reelserve.schemas import GenerationParams, Job, JobStatus, ReelserveError
from reelserve.schemas.requests import VideoRemixRequest
from reelserve.storage.local import LocalStorage


async def test_a_remix_drops_the_sources_shift_where_the_sampler_takes_none(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    params = GenerationParams(model="micro", prompt="a red ball", width=64, height=64, num_frames=9, fps=8,
                              num_inference_steps=4, guidance_scale=5.0, seed=3, flow_shift=3.0)
    source = Job(params=params, status=JobStatus.completed, video_key=video_key("video_src"), id="video_src")
    storage.put(source.video_key, b"an mp4's bytes")
    shifting = RequestResolver("micro", get_spec("micro").limits, storage)
    _, kept, _ = await shifting.remix(source, VideoRemixRequest(prompt="a blue ball"))
    assert kept.flow_shift == 3.0  # a sampler that takes one keeps the source's

    no_shift = RequestResolver("micro", get_spec("micro").limits.model_copy(update={"flow_shift": False}), storage)
    _, dropped, _ = await no_shift.remix(source, VideoRemixRequest(prompt="a blue ball"))
    assert dropped.flow_shift is None and dropped.source is not None
    _, null, _ = await no_shift.remix(source, VideoRemixRequest(prompt="a blue ball", flow_shift=None))
    assert null.flow_shift is None  # an explicit null asks for no shift
    with pytest.raises(ReelserveError) as asked:
        await no_shift.remix(source, VideoRemixRequest(prompt="a blue ball", flow_shift=2.0))
    assert asked.value.param == "flow_shift"
