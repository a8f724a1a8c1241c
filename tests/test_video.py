"""encode_mp4 / encode_thumbnail / first_frame / probe_mp4: exact frame counts, sizes, rates and content."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from reelserve.video import (
    MP4_CONTENT_TYPE,
    THUMBNAIL_CONTENT_TYPE,
    VideoInfo,
    encode_mp4,
    encode_thumbnail,
    first_frame,
    probe_mp4,
)


def random_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, height, width, 3), dtype=np.float32)


def decode_rgb(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_content_types() -> None:
    assert MP4_CONTENT_TYPE == "video/mp4"
    assert THUMBNAIL_CONTENT_TYPE == "image/jpeg"


def test_nine_frames_at_8_fps() -> None:
    data = encode_mp4(random_frames(9, 48, 64), fps=8)
    assert probe_mp4(data) == VideoInfo(
        frames=9, width=64, height=48, fps=8.0, codec="h264", pix_fmt="yuv420p"
    )


@pytest.mark.parametrize(("count", "fps"), [(1, 8), (2, 16), (5, 8), (33, 24)])
def test_every_frame_is_written(count: int, fps: int) -> None:
    # x264 buffers frames for lookahead and B-frames; short clips are where a missing flush shows.
    info = probe_mp4(encode_mp4(random_frames(count, 48, 64, seed=count), fps=fps))
    assert (info.frames, info.width, info.height, info.fps) == (count, 64, 48, float(fps))


def test_moov_comes_before_mdat_for_streaming() -> None:
    data = encode_mp4(random_frames(5, 48, 64), fps=8)
    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("color", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.2, 0.6, 0.9)])
def test_solid_color_survives_the_round_trip(color: tuple[float, float, float]) -> None:
    # Saturated primaries expose a BT.601/BT.709 matrix mismatch between encoder and decoder.
    frames = np.broadcast_to(np.array(color, dtype=np.float32), (5, 48, 64, 3))
    expected = np.array(color) * 255
    for decoded in decode_rgb(encode_mp4(frames, fps=8)):
        assert np.abs(decoded.astype(np.float64) - expected).mean() < 3


def test_uint8_gradient_survives_the_round_trip() -> None:
    ramp = np.linspace(0, 255, 64, dtype=np.float64)
    frame = np.stack(
        [np.tile(ramp, (48, 1)), np.tile(ramp[::-1], (48, 1)), np.full((48, 64), 128.0)], axis=-1
    )
    frames = np.stack([np.rint(frame).astype(np.uint8)] * 9)
    decoded = decode_rgb(encode_mp4(frames, fps=8))
    assert len(decoded) == 9
    for image in decoded:
        assert np.abs(image.astype(np.int16) - frames[0].astype(np.int16)).mean() < 3


def test_float_frames_are_clipped_not_wrapped() -> None:
    frames = np.full((1, 16, 16, 3), 2.0, dtype=np.float32)  # out of range: must clip to white
    (decoded,) = decode_rgb(encode_mp4(frames, fps=8))
    assert decoded.mean() > 250


@pytest.mark.parametrize(("height", "width"), [(48, 63), (47, 64), (47, 63)])
def test_odd_size_is_rejected(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="even"):
        encode_mp4(random_frames(3, height, width), fps=8)


@pytest.mark.parametrize("shape", [(0, 48, 64, 3), (48, 64, 3), (2, 48, 64, 4)])
def test_bad_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        encode_mp4(np.zeros(shape, dtype=np.uint8), fps=8)


def test_first_frame_is_the_first_of_the_video_as_decoded() -> None:
    frames = np.stack([np.full((48, 64, 3), value, dtype=np.float32) for value in (0.1, 0.5, 0.9)])
    first = first_frame(encode_mp4(frames, fps=8))
    assert first.dtype == np.uint8 and first.shape == (48, 64, 3)
    assert abs(float(first.mean()) - 0.1 * 255) < 3  # the first, not a later one


def test_first_frame_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        first_frame(b"this is not an mp4")


def test_probe_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        probe_mp4(b"this is not an mp4")


def open_jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_thumbnail_is_downscaled_keeping_aspect() -> None:
    frame = random_frames(1, 480, 832)[0]
    assert open_jpeg(encode_thumbnail(frame)).size == (320, 185)  # 832x480 scaled by 320/832
    assert open_jpeg(encode_thumbnail(frame, max_side=100)).size == (100, 58)


def test_thumbnail_of_portrait_frame_fits_height() -> None:
    frame = (random_frames(1, 640, 480)[0] * 255).astype(np.uint8)
    assert open_jpeg(encode_thumbnail(frame)).size == (240, 320)


def test_thumbnail_is_never_upscaled() -> None:
    frame = np.full((48, 64, 3), 0.5, dtype=np.float32)
    image = open_jpeg(encode_thumbnail(frame, max_side=320))
    assert image.size == (64, 48)
    assert abs(np.asarray(image.convert("RGB"), dtype=np.float64).mean() - 127.5) < 2
