"""A clip to re-draw (``input_video``, and a remix's MP4 once its latents have expired), read the way
a server that takes uploads from anyone must: the bytes are bounded before they are parsed, the frame
size and the duration are read from the container and bounded before a frame is decoded, only the
frames the video needs are decoded, and a clip of another size is refused unless the request says how
to fit it (``input_fit``). Every refusal is a 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
from reelserve.inputs.images import MAX_IMAGE_PIXELS, Fit, fitted
from reelserve.schemas.errors import invalid

if TYPE_CHECKING:
    import av.container

FIELD = "input_video"
MAX_VIDEO_BYTES = 32 * 2**20
MAX_VIDEO_SECONDS = 60.0
_DATA_URL_PREFIXES = ("data:video/mp4;base64,", "data:video/quicktime;base64,", "data:video/webm;base64,")


@dataclass(frozen=True)
class ClipHeader:
    """What the container says of its first video stream, before anything is decoded."""

    width: int
    height: int
    frames: int  # as counted by the container; 0 when it does not say


@dataclass(frozen=True)
class SourceClip:
    """The frames a video re-draws: (F, H, W, 3) uint8 RGB at the video's shape."""

    frames: np.ndarray
    fit: Fit | None
    digest: str  # "sha256:" of the frames as fitted and the fit: what the model sees


def read_header(data: bytes, field: str = FIELD) -> ClipHeader:
    """The clip's size and frame count, refused past the byte, pixel and duration limits."""
    import av  # only where a clip comes: the API role loads no PyAV otherwise (docs/architecture.md)

    if len(data) > MAX_VIDEO_BYTES:
        raise invalid(field, f"{field}: at most {MAX_VIDEO_BYTES // 2**20} MiB; got {len(data) / 2**20:.1f} MiB. "
                      "Send a shorter or smaller clip")
    with _open(data, field) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_IMAGE_PIXELS or width <= 0 or height <= 0:
            raise invalid(field, f"{field}: {width}x{height} frames; at most {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels. "
                          "Send a smaller clip")
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if seconds is None and container.duration:
            seconds = container.duration / av.time_base
        if seconds is not None and seconds > MAX_VIDEO_SECONDS:
            raise invalid(field, f"{field}: {seconds:.1f} s long; at most {MAX_VIDEO_SECONDS:g} s. Send a shorter clip "
                          "(only its first num_frames frames are used)")
        return ClipHeader(width=width, height=height, frames=int(stream.frames or 0))


def read_clip(data: bytes, width: int, height: int, frames: int, fit: Fit | None, field: str = FIELD) -> SourceClip:
    """The first ``frames`` frames of ``data`` at ``width`` x ``height``: the header checked first
    (``read_header``), then only those frames decoded."""
    import av

    header = read_header(data, field)
    if (header.width, header.height) != (width, height) and fit is None:
        raise invalid(field, f"{field}: the clip is {header.width}x{header.height} and the video {width}x{height}; "
                      "send a clip of the video's size, or input_fit 'crop', 'pad' or 'resize' to fit it")
    decoded = []
    with _open(data, field) as container:
        try:
            for frame in container.decode(video=0):
                image = frame.to_image()
                decoded.append(np.asarray(image if image.size == (width, height) else
                                          fitted(image, (width, height), fit or Fit.resize), dtype=np.uint8))
                if len(decoded) == frames:
                    break
        except av.error.FFmpegError as exc:
            raise invalid(field, f"{field}: the clip could not be decoded ({exc}); send the whole, uncorrupted file") from None
    if len(decoded) < frames:
        raise invalid(field, f"{field}: the clip has {len(decoded)} frames and the video needs {frames}; send a "
                      f"longer clip, or num_frames of at most {len(decoded)} (4k+1)")
    clip = np.stack(decoded)
    fit = None if (header.width, header.height) == (width, height) else fit
    digest = hashlib.sha256(clip.tobytes() + f"|{width}x{height}x{frames}|{fit or ''}".encode()).hexdigest()
    return SourceClip(frames=clip, fit=fit, digest=f"sha256:{digest}")


def from_data_url(text: str, field: str = FIELD) -> bytes:
    """The bytes of a ``data:video/mp4;base64,`` URL (how JSON bodies carry a clip)."""
    stripped = text.strip()
    prefix = next((p for p in _DATA_URL_PREFIXES if stripped.startswith(p)), None)
    if prefix is None:
        raise invalid(field, f"{field}: in JSON, send a data URL 'data:video/mp4;base64,...', or upload the file "
                      "as multipart/form-data")
    try:
        return base64.b64decode(stripped[len(prefix):], validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, f"{field}: the data URL's base64 does not decode; send the file's bytes base64-encoded") from None


def _open(data: bytes, field: str) -> av.container.InputContainer:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise invalid(field, f"{field}: not a video file PyAV can read ({type(exc).__name__}); send an MP4 (H.264) "
                      "or WebM clip") from None
    if not container.streams.video:
        container.close()
        raise invalid(field, f"{field}: the file has no video stream; send an MP4 (H.264) or WebM clip")
    return container
