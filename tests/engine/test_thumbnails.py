"""Thumbnails made from the stored video when first asked for (engine/thumbnails.py), through the engine."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from engine_parts import engine, parts, request, wait_final  # noqa: F401 - fixtures, by name
from PIL import Image

from reelserve.engine.engine import Engine, thumbnail_key, video_key
from reelserve.schemas import ErrorCode, ReelserveError
from reelserve.video import first_frame


async def test_a_thumbnail_is_made_from_the_stored_video_when_first_asked_for(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    done = await wait_final(engine, (await engine.submit(request("a lighthouse to look at", seed=3))).id)
    storage, puts, put = parts["storage"], [], parts["storage"].put
    monkeypatch.setattr(storage, "put", lambda key, data: (puts.append(key), put(key, data)))
    content = await engine.content(done.id, "thumbnail")
    again = await engine.content(done.id, "thumbnail")
    assert content.key == again.key == thumbnail_key(done.id) and puts == [content.key]  # made once, then kept
    with Image.open(io.BytesIO(storage.get(content.key))) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("JPEG", (32, 32))
        shown = np.asarray(thumbnail.convert("RGB"), dtype=np.float64)
    first = first_frame(storage.get(video_key(done.id))).astype(np.float64)  # what a player shows first
    assert np.abs(shown - first).mean() < 4.0  # the same picture, through one more JPEG pass


async def test_a_thumbnail_asked_for_while_its_job_is_deleted_is_not_left_behind(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    done = await wait_final(engine, (await engine.submit(request("a lighthouse deleted at once"))).id)
    storage, put = parts["storage"], parts["storage"].put

    def put_then_delete(key: str, data: bytes) -> None:  # the delete lands between the make and the check
        put(key, data)
        parts["store"].delete(done.id)

    monkeypatch.setattr(storage, "put", put_then_delete)
    with pytest.raises(ReelserveError) as refused:
        await engine.content(done.id, "thumbnail")
    assert refused.value.code == ErrorCode.not_found and not storage.exists(thumbnail_key(done.id))
