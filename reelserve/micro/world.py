"""The micro model's world: one flat shape on a plain background, moving in one direction.

Every clip is described by a ``Scene``; ``render`` draws it. The attribute tables here are shared by
the dataset, the captions and the evaluator, so all three agree on what "red" or "up" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Shape = Literal["circle", "square", "triangle"]
Motion = Literal["left", "right", "up", "down", "still"]

SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[Motion, ...] = ("left", "right", "up", "down", "still")
# Saturated, far apart in RGB, and far from every background, so colour survives a blurry decoder.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "magenta": (225, 50, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "grey": (120, 120, 120),
    "navy": (20, 28, 80),
}

FRAMES = 17  # 4k+1, as the Wan VAE needs
SIZE = 64  # width and height in pixels
SPEED = 1.75  # pixels per frame: 28 px over a clip, clearly visible, and the object stays in frame
MIN_EXTENT, MAX_EXTENT = 14, 20  # object size in pixels (circle diameter, square and triangle side)
MARGIN = 2
_SUPERSAMPLE = 4  # anti-aliased edges, like a real video, so the VAE is not asked for hard steps

# Unit displacement per frame, in (x, y) with y growing downwards as in image rows.
DIRECTIONS: dict[Motion, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}


@dataclass(frozen=True)
class Scene:
    """What one clip shows. ``x``/``y`` are the object's centre in the first frame, in pixels."""

    shape: Shape
    color: str
    motion: Motion
    background: str
    extent: float
    x: float
    y: float

    def centre(self, frame: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.motion]
        return self.x + dx * SPEED * frame, self.y + dy * SPEED * frame


def random_scene(
    rng: np.random.Generator, shape: Shape, color: str, motion: Motion, background: str,
    extents: tuple[float, float] = (MIN_EXTENT, MAX_EXTENT),
) -> Scene:
    """A scene with these attributes at a random size (within ``extents``) and a start position that
    keeps the whole path inside the frame."""
    extent = float(rng.uniform(*extents))
    half = extent / 2 + MARGIN
    travel = SPEED * (FRAMES - 1)
    dx, dy = DIRECTIONS[motion]
    x = _start(rng, half, travel, dx)
    y = _start(rng, half, travel, dy)
    return Scene(shape, color, motion, background, extent, x, y)


def _start(rng: np.random.Generator, half: float, travel: float, direction: int) -> float:
    low, high = half, SIZE - half
    if direction > 0:
        high -= travel
    elif direction < 0:
        low += travel
    return float(rng.uniform(low, high))


def shape_mask(shape: Shape, cx: float, cy: float, extent: float, size: int = SIZE) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape, anti-aliased by supersampling."""
    n = size * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / _SUPERSAMPLE
    xs, ys = np.meshgrid(coords, coords)
    half = extent / 2
    if shape == "circle":
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    elif shape == "square":
        inside = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    else:
        # Upright isosceles triangle, base = extent, height = extent, centred on its bounding box.
        top, bottom = cy - half, cy + half
        rel = (ys - top) / extent  # 0 at the apex, 1 at the base
        inside = (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= rel * half)
    return inside.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))


def render(scene: Scene) -> np.ndarray:
    """The clip as uint8 frames, shape (FRAMES, SIZE, SIZE, 3)."""
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    colour = np.array(COLORS[scene.color], dtype=np.float32)
    frames = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    for t in range(FRAMES):
        cx, cy = scene.centre(t)
        alpha = shape_mask(scene.shape, cx, cy, scene.extent)[..., None]
        frames[t] = np.round(alpha * colour + (1 - alpha) * background).astype(np.uint8)
    return frames
