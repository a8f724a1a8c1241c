"""The official openai SDK drives the server: multipart create, retrieve, list, download, delete."""

from __future__ import annotations

import warnings

import openai
from support import RunningServer, wait_until

from reelserve.video import probe_mp4


def test_openai_sdk_round_trip(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the videos API deprecated
        video = client.videos.create(
            model="tiny", prompt="a hot air balloon", size="64x48", seconds="1",
            extra_body={"num_inference_steps": 3, "seed": 42, "fps": 8},
        )
        assert video.status == "queued" and video.size == "64x48" and video.seconds == "1"
        done = wait_until(lambda: (v := client.videos.retrieve(video.id)).status == "completed" and v)
        assert done.progress == 100 and done.model == "tiny"
        assert done.model_extra is not None and done.model_extra["seed"] == 42
        listed = client.videos.list(limit=5)
        assert video.id in [v.id for v in listed.data]
        content = client.videos.download_content(video.id)
        info = probe_mp4(content.read())
        assert (info.frames, info.width, info.height, info.fps) == (9, 64, 48, 8.0)
        deleted = client.videos.delete(video.id)
        assert deleted.deleted is True and deleted.id == video.id
        try:
            client.videos.retrieve(video.id)
        except openai.NotFoundError as exc:
            assert exc.body["code"] == "not_found"  # type: ignore[index]
        else:
            raise AssertionError("deleted video still retrievable")
        try:
            client.videos.create(model="tiny", prompt="x", seconds="4", size="720x1280")
        except openai.UnprocessableEntityError as exc:
            assert exc.body["param"] == "size"  # type: ignore[index]
        else:
            raise AssertionError("oversized request accepted")
