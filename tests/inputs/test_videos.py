"""A clip to re-draw is read safely: bounded before it is parsed, its header checked before a frame is
decoded, only the frames needed decoded, fitted only as asked; every refusal names ``input_video``."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest

from reelserve.inputs.images import Fit
from reelserve.inputs.videos import MAX_VIDEO_BYTES, from_data_url, read_clip, read_header
from reelserve.schemas.errors import ReelserveError


def mp4(frames: int, width: int = 64, height: int = 48, fps: int = 8) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.full((height, width, 3), (i * 10) % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def refused(data: bytes, *args: object) -> str:
    with pytest.raises(ReelserveError) as caught:
        read_clip(data, *args) if args else read_header(data)  # type: ignore[arg-type]
    assert caught.value.param == "input_video"
    return str(caught.value)


def test_the_header_says_the_size_and_frame_count() -> None:
    header = read_header(mp4(9))
    assert (header.width, header.height, header.frames) == (64, 48, 9)


def test_the_first_frames_are_decoded_at_the_videos_size() -> None:
    clip = read_clip(mp4(9), 64, 48, 5, None)
    assert clip.frames.shape == (5, 48, 64, 3) and clip.fit is None and clip.digest.startswith("sha256:")
    assert abs(int(clip.frames[4].mean()) - 40) <= 3  # the fifth frame, not another
    assert read_clip(mp4(9), 64, 48, 5, None).digest == clip.digest
    assert read_clip(mp4(9), 64, 48, 9, None).digest != clip.digest


def test_another_size_is_fitted_only_as_asked() -> None:
    assert "input_fit" in refused(mp4(5), 32, 32, 5, None)
    fitted = read_clip(mp4(5), 32, 32, 5, Fit.crop)
    assert fitted.frames.shape == (5, 32, 32, 3) and fitted.fit is Fit.crop


def test_bad_clips_are_refused_naming_the_field() -> None:
    assert "not a video file" in refused(b"not a video at all")
    assert "at most 60 s" in refused(mp4(62, fps=1))
    assert "needs 9" in refused(mp4(5), 64, 48, 9, None)
    assert f"at most {MAX_VIDEO_BYTES // 2**20} MiB" in refused(b"\0" * (MAX_VIDEO_BYTES + 1))


def test_a_data_url_carries_the_clip_in_json() -> None:
    data = mp4(5)
    assert from_data_url("data:video/mp4;base64," + base64.b64encode(data).decode()) == data
    with pytest.raises(ReelserveError, match="data URL"):
        from_data_url("https://example.invalid/clip.mp4")
