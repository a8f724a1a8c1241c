"""Turning generated frames into files a browser can play: H.264 MP4 and a JPEG thumbnail.

Frames arrive as ``(F, H, W, 3)`` arrays, either float in ``[0, 1]`` or ``uint8``. Everything is
encoded in memory; the caller decides where the bytes go.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

MP4_CONTENT_TYPE = "video/mp4"
THUMBNAIL_CONTENT_TYPE = "image/jpeg"

# Visually lossless for generated content while keeping files small.
_CRF = 18
# Encode time matters more than a few percent of size: the GPU is the bottleneck, not x264.
_PRESET = "veryfast"
_THUMBNAIL_QUALITY = 85
_AVIO_FLAG_READ = 1  # libavformat's AVIO_FLAG_READ


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder actually saw in an MP4. ``frames`` is counted, not read from metadata."""

    frames: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """``uint8`` pixels from ``uint8`` (returned as is) or float in ``[0, 1]`` (clipped, rounded)."""
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be float in [0, 1] or uint8; got dtype {frames.dtype}")
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """Encode ``(F, H, W, 3)`` RGB frames as an H.264 (yuv420p) MP4 at exactly ``fps`` frames/s.

    The result has exactly ``F`` frames and its ``moov`` atom up front (``+faststart``), so it can
    be streamed. ``H`` and ``W`` must be even (a yuv420p requirement); odd sizes raise
    ``ValueError`` rather than being padded, so the video is always the size that was asked for.
    Also raises ``ValueError`` for an empty clip, a wrong shape or ``fps < 1``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3); got {frames.shape}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError("cannot encode a clip with no frames")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p; got {width}x{height}")
    if fps < 1:
        raise ValueError(f"fps must be a positive integer; got {fps}")
    import av  # here, not at the top: the API process uses this module's names but never encodes
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, VideoReformatter

    pixels = to_uint8(frames)
    buffer = io.BytesIO()
    with av.open(
        buffer,
        mode="w",
        format="mp4",
        container_options={"movflags": "+faststart"},
        io_open=lambda url, flags, options: _reopen_for_read(buffer, flags),
    ) as container:
        # An integer rate makes the time base 1/fps, so the container reports fps exactly.
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(_CRF), "preset": _PRESET}
        # One x264 thread: a clip this small encodes as fast on one (12 ms against 13 ms for 64x64x17
        # here), and x264's default of 1.5 threads per core would compete with the pipeline lanes.
        stream.codec_context.thread_count = 1
        # Tag the stream BT.709 limited range and convert with that same matrix, so players
        # do not guess (untagged streams are decoded as BT.601 by some, BT.709 by others).
        codec_context = stream.codec_context
        codec_context.colorspace = Colorspace.ITU709
        codec_context.color_range = ColorRange.MPEG
        codec_context.color_primaries = ColorPrimaries.BT709
        codec_context.color_trc = ColorTrc.BT709
        # One converter for every frame: ``VideoFrame.reformat`` makes a new swscale context per
        # frame, which was two thirds of a 64x64x17 clip's encode (8.4 ms of 12; the same pixels).
        reformatter = VideoReformatter()
        for index, image in enumerate(pixels):
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = reformatter.reformat(
                rgb,
                format="yuv420p",
                dst_colorspace=Colorspace.ITU709,
                dst_color_range=ColorRange.MPEG,
                dst_color_trc=ColorTrc.BT709,
                dst_color_primaries=ColorPrimaries.BT709,
            )
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        # x264 holds frames back for lookahead and B-frames; draining it writes every one of them.
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _reopen_for_read(buffer: io.BytesIO, flags: int) -> io.BytesIO:
    """Answer the muxer's request to reopen its own output, which ``+faststart`` makes.

    To move ``moov`` to the front, FFmpeg flushes the output, reopens it read-only and copies
    the media data forward. An in-memory output has no path to reopen, so hand it a snapshot
    taken at that moment: it holds exactly what was flushed, which is what the copy reads.
    """
    if flags != _AVIO_FLAG_READ:
        raise OSError(f"the MP4 muxer asked to reopen its output with flags {flags}; only read is supported")
    return io.BytesIO(buffer.getvalue())


def encode_thumbnail(frame: np.ndarray, max_side: int = 320) -> bytes:
    """A JPEG of one ``(H, W, 3)`` frame whose longer side is at most ``max_side`` pixels.

    The aspect ratio is kept and small frames are never upscaled. Raises ``ValueError`` for a
    wrong shape or ``max_side < 1``.
    """
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must have shape (H, W, 3); got {frame.shape}")
    if max_side < 1:
        raise ValueError(f"max_side must be positive; got {max_side}")
    image = Image.fromarray(np.ascontiguousarray(to_uint8(frame)), mode="RGB")
    # thumbnail() only ever shrinks, keeping the aspect ratio.
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=_THUMBNAIL_QUALITY)
    return out.getvalue()


def first_frame(data: bytes) -> np.ndarray:
    """The first frame of the MP4 in ``data``, ``(H, W, 3)`` RGB ``uint8``, as a player shows it.

    Raises ``ValueError`` if there is no video stream or no frame, and PyAV's ``av.error.FFmpegError``
    (a ``ValueError`` subclass for invalid data) if the bytes are not a readable container.
    """
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one frame: threads would only add start-up (and take cores from a run)
        for frame in container.decode(stream):
            return np.asarray(frame.to_ndarray(format="rgb24"))
    raise ValueError("the video has no frame")


def probe_mp4(data: bytes) -> VideoInfo:
    """Decode ``data`` fully and report what is in its first video stream.

    Raises ``ValueError`` if there is no video stream, and PyAV's ``av.error.FFmpegError`` (a
    ``ValueError`` subclass for invalid data) if the bytes are not a readable container.
    """
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        codec_context = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(
            frames=frames,
            width=codec_context.width,
            height=codec_context.height,
            fps=float(rate) if rate else 0.0,
            codec=codec_context.name,
            pix_fmt=codec_context.pix_fmt or "",
        )
