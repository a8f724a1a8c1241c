"""Contact sheets: many clips in one PNG, one row per clip, for looking at a model's outputs at a glance."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SEPARATOR = 2  # pixels of separator colour between frames, between rows and around the edge
SEPARATOR_COLOUR = (255, 255, 255)
LABEL_HEIGHT = 14  # pixels of label band above each row, present whenever labels are given
LABEL_COLOUR = (255, 255, 255)
LABEL_BACKGROUND = (32, 32, 32)


def contact_sheet(
    clips: list[np.ndarray],
    labels: list[str] | None,
    path: Path,
    frames_per_clip: int = 5,
    scale: int = 2,
) -> Path:
    """Write a PNG grid of ``clips`` (uint8 (T, H, W, 3), all the same H and W) to ``path`` and
    return it.

    Row i shows ``frames_per_clip`` frames spread evenly from the first to the last of clip i,
    each enlarged ``scale`` times (nearest neighbour). With ``labels`` (one per clip), each row gets a
    ``LABEL_HEIGHT`` band above it holding its label; the text is drawn when Pillow is installed and
    the band is left blank otherwise. The sheet is ``frames_per_clip * W * scale + (frames_per_clip +
    1) * SEPARATOR`` pixels wide and ``len(clips) * (band + H * scale) + (len(clips) + 1) * SEPARATOR``
    high. Raises ValueError for no clips, mismatched labels, clips of different sizes or bad counts.
    """
    sheet = _grid(clips, labels, frames_per_clip, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        path.write_bytes(encode_png(sheet))
        return path
    image = Image.fromarray(sheet)
    if labels is not None:
        draw = ImageDraw.Draw(image)
        row_height = LABEL_HEIGHT + clips[0].shape[1] * scale + SEPARATOR
        for i, label in enumerate(labels):
            draw.text((SEPARATOR + 2, SEPARATOR + i * row_height + 1), label, fill=LABEL_COLOUR)
    image.save(path, format="PNG")
    return path


def _grid(clips: list[np.ndarray], labels: list[str] | None, frames_per_clip: int, scale: int) -> np.ndarray:
    """The sheet's pixels, (height, width, 3) uint8, with blank label bands."""
    if not clips:
        raise ValueError("a contact sheet needs at least one clip")
    if labels is not None and len(labels) != len(clips):
        raise ValueError(f"{len(labels)} labels for {len(clips)} clips")
    if frames_per_clip < 1 or scale < 1:
        raise ValueError("frames_per_clip and scale must be at least 1")
    h, w = clips[0].shape[1:3]
    if any(clip.ndim != 4 or clip.shape[1:] != (h, w, 3) for clip in clips):
        raise ValueError("every clip must be (T, H, W, 3) with the same H and W")
    band = LABEL_HEIGHT if labels is not None else 0
    cell_h, cell_w = h * scale, w * scale
    width = frames_per_clip * cell_w + (frames_per_clip + 1) * SEPARATOR
    height = len(clips) * (band + cell_h) + (len(clips) + 1) * SEPARATOR
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = SEPARATOR_COLOUR
    for row, clip in enumerate(clips):
        top = SEPARATOR + row * (band + cell_h + SEPARATOR)
        sheet[top:top + band, SEPARATOR:width - SEPARATOR] = LABEL_BACKGROUND
        picks = np.linspace(0, len(clip) - 1, frames_per_clip).round().astype(int)
        for col, t in enumerate(picks):
            left = SEPARATOR + col * (cell_w + SEPARATOR)
            frame = clip[t].repeat(scale, axis=0).repeat(scale, axis=1)
            sheet[top + band:top + band + cell_h, left:left + cell_w] = frame
    return sheet


def encode_png(image: np.ndarray) -> bytes:
    """A minimal PNG (8-bit RGB, no filtering) of a uint8 (H, W, 3) array, for when Pillow is absent."""
    height, width = image.shape[:2]
    # Each scanline starts with its filter type; 0 means "none".
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes())) + chunk(b"IEND", b""))
