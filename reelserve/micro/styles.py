"""Styles of the micro world that the base model never saw, for the micro model's adapters to learn.

``outline``: the object drawn as its outline (a stroke of ``OUTLINE_STROKE`` pixels) instead of
filled, and larger (``OUTLINE_EXTENT``), with the colour, shape, motion and background of the scene
unchanged. Larger, because the micro VAE compresses 8x in space and was trained on filled shapes
only: it draws a hollow of about three latent cells and more, but fills in a smaller one, so an
adapter of the transformer alone could not make a small outline visible.

``read_style`` measures the style in any clip, generated or rendered: per frame, the share of the
object's silhouette (the convex hull of its parts) that is background inside: its hollowness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelserve.micro.world import BACKGROUNDS, COLORS, FRAMES, SIZE, Scene, random_scene, shape_mask

OUTLINE_EXTENT = (24.0, 30.0)  # pixels, against the world's 14-20
OUTLINE_STROKE = 4.0
# A drawn outline measures 0.2-0.52 (triangles lowest: their hollow is the smallest). Generated
# filled shapes measure 0.07 on average (blobs are not quite convex), 2 of 42 held-out clips 0.2 or
# more; the outline adapter's clips 0.42 on average (``reelserve micro eval-adapter``).
OUTLINED_AT = 0.2


@dataclass(frozen=True)
class StyleReading:
    hollowness: float  # median over the frames that have an object; 0.0 when none has
    outlined: bool
    shape: str | None = None  # the silhouette's shape, read as ``evaluate.judge`` reads a filled one


def outline_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """``scene`` with the outline style's size, and a start that keeps the whole path in frame."""
    return random_scene(rng, scene.shape, scene.color, scene.motion, scene.background, OUTLINE_EXTENT)


def outline_mask(scene: Scene, frame: int) -> np.ndarray:
    """Coverage of the outline in ``frame``: the shape less the same shape ``OUTLINE_STROKE`` in."""
    cx, cy = scene.centre(frame)
    outer = shape_mask(scene.shape, cx, cy, scene.extent)
    if scene.shape == "triangle":
        # A triangle's inner edge at a stroke's distance: its incircle shrinks by the stroke, so the
        # similar triangle is smaller by stroke / inradius, about its incentre.
        inradius = scene.extent / (1 + np.sqrt(5))  # base e, height e: sides e·√5/2
        factor = 1 - OUTLINE_STROKE / inradius
        incentre_y = cy + scene.extent / 2 - inradius
        inner = shape_mask("triangle", cx, incentre_y + (cy - incentre_y) * factor, scene.extent * factor)
    else:
        inner = shape_mask(scene.shape, cx, cy, scene.extent - 2 * OUTLINE_STROKE)
    return np.clip(outer - inner, 0.0, 1.0)


def render_outline(scene: Scene) -> np.ndarray:
    """The clip in the outline style, uint8 (FRAMES, SIZE, SIZE, 3)."""
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    colour = np.array(COLORS[scene.color], dtype=np.float32)
    frames = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    for t in range(FRAMES):
        alpha = outline_mask(scene, t)[..., None]
        frames[t] = np.round(alpha * colour + (1 - alpha) * background).astype(np.uint8)
    return frames


def read_style(frames: np.ndarray) -> StyleReading:
    """How hollow the object of uint8 frames (T, H, W, 3) is, read the way ``evaluate.judge`` finds
    the object (its colour against the border's, coverage ≥ 0.5), over every part of it big enough
    to be one: a generated outline often has gaps, so its arcs are several components."""
    from reelserve.micro.evaluate import (
        MIN_AREA, _border, _coverage, _label, _rough_colour, _shape, _track,
    )

    pixels = frames.astype(np.float32)
    background = np.median(_border(pixels), axis=0)
    colour = _rough_colour(pixels, background)
    if colour is None:
        return StyleReading(0.0, False)
    labels = _label(_coverage(pixels, background, colour) >= 0.5)
    sizes = np.bincount(labels.ravel(), minlength=labels.size + 1)
    sizes[0] = 0
    drawn = sizes[labels] >= MIN_AREA  # (T, H, W): pixels of parts of MIN_AREA pixels or more
    area = drawn.sum(axis=(1, 2))
    present = area >= MIN_AREA
    if not present.any():
        return StyleReading(0.0, False)
    silhouette = _hull(drawn)
    hollow = 1.0 - area[present] / np.maximum(silhouette[present].sum(axis=(1, 2)), 1)
    value = float(np.median(hollow))
    # An outline's own row and column profiles say little of its shape; its silhouette's say as much
    # as a filled object's.
    shape = _shape(_track(silhouette.astype(np.float32), present, area, np.ones_like(area, dtype=float)))
    return StyleReading(value, value >= OUTLINED_AT, shape)


def _hull(mask: np.ndarray) -> np.ndarray:
    """Per frame of a (T, H, W) mask, its convex hull (the pixels whose centres lie in the hull of the
    mask's pixel centres). A convex shape is its own hull; an outline's hull is the shape it outlines,
    gaps in the outline and all."""
    hull = np.zeros_like(mask)
    height, width = mask.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width]
    for t in range(len(mask)):
        corners = _convex_polygon(np.argwhere(mask[t])[:, ::-1])  # (x, y), counter-clockwise
        if len(corners) < 3:
            hull[t] = mask[t]
            continue
        inside = np.ones((height, width), dtype=bool)
        for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0), strict=True):
            inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= -1e-9
        hull[t] = inside | mask[t]
    return hull


def _convex_polygon(points: np.ndarray) -> np.ndarray:
    """The corners of the convex hull of integer (x, y) points, counter-clockwise (Andrew's monotone
    chain); fewer than three for points on a line."""
    ordered = sorted(map(tuple, np.unique(points, axis=0).tolist()))
    if len(ordered) < 3:
        return np.array(ordered)

    def turn(o: tuple, a: tuple, b: tuple) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(sequence: list) -> list:
        kept: list = []
        for point in sequence:
            while len(kept) >= 2 and turn(kept[-2], kept[-1], point) <= 0:
                kept.pop()
            kept.append(point)
        return kept[:-1]

    return np.array(chain(ordered) + chain(ordered[::-1]))
