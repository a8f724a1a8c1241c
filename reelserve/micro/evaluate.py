"""An analytic prompt-adherence judge for micro-world clips: no learned model, only image statistics.

``judge`` reads a clip (real or generated) and says which colour, shape and motion it shows;
``score`` compares that reading with a prompt's attributes and ``accuracy`` sums a run up.

The reading is built to survive the blur and noise of a small decoder:

1. The background colour is the median of the border pixels over all frames.
2. A first guess at the object's colour comes from the pixels farthest from the background. Each
   pixel's *coverage* is its projection onto the background→object colour line, so a half-blurred
   edge pixel counts as half covered; the object mask is coverage ≥ 0.5, which leaves straight edges
   about where they were before a symmetric blur. Per frame, the largest 8-connected component of
   that mask is the object.
3. Colour: the median of the object's interior (the mask eroded by ``_EDGE`` pixels) over all
   frames, matched to the nearest ``world.COLORS`` entry; coverage is then recomputed against it.
4. Motion: a least-squares line through the per-frame centroids of the object's coverage.
5. Shape: from row and column coverage profiles, each frame's centred on its centroid and averaged
   over frames (which averages the noise away). Blur moves coverage between neighbouring rows but
   keeps each row's total, so the profiles' maxima and their total survive it: the fill
   ``area / (max row mass × max column mass)`` is 1 for a square and π/4 for a circle. A triangle
   is the one lopsided shape: an upright one's row profile has skewness ≈ -0.57 (either profile
   counts, either sign, so a triangle on its side or upside down still reads as one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelserve.micro.world import COLORS, SPEED

# The 0.5 % of a clip's pixels farthest from the background lie inside the object, which covers a
# few percent of each frame, even under heavy noise.
PEAK_PERCENTILE = 99.5
# Every world colour is ≥ ~180 RGB units from every background; an "object" closer to the background
# than this is noise or a smudge.
MIN_CONTRAST = 60.0
MIN_AREA = 9  # pixels: a smaller largest component is a speck of noise, not an object
# Square fill 1.0, circle π/4 ≈ 0.785: the cut is their (geometric) midpoint. Below TRIANGLE_FILL
# only a triangle (0.5) remains. |skewness| beyond LOPSIDED also means triangle: circles and squares
# measure < 0.06 through blur and noise (< 0.2 at JPEG quality 20), triangles > 0.35 (0.18 under a
# σ≈3 px blur).
CIRCLE_BELOW, TRIANGLE_FILL, LOPSIDED = 0.89, 0.64, 0.22
# A clip that moves less than this fraction of the world's travel (SPEED px/frame) reads as still.
STILL_FRACTION = 1 / 3
DOMINANT_FRACTION = 0.9  # of the area of a frame's object-sized components, held by the largest
AREA_TOLERANCE = 0.3  # relative deviation from the median object area still counted as the same object
_BORDER = 2  # pixels of frame edge sampled for the background colour
_EDGE = 3  # pixels: how far blur spreads an edge, for the object's interior and its surroundings
_COLOR_NAMES = tuple(COLORS)
_COLOR_TABLE = np.array([COLORS[name] for name in _COLOR_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Judgement:
    """What ``judge`` read from a clip.

    ``color``/``shape``/``motion`` are names from ``world.COLORS``/``SHAPES``/``MOTIONS``, or None
    when no object was found (``found`` False). ``consistency`` in [0, 1] is the fraction of frames
    in which the object is intact, meaning all of:

    - the frame has an object: its largest component has ≥ ``MIN_AREA`` pixels;
    - no split and no second object: that component holds ≥ ``DOMINANT_FRACTION`` of the area of all
      the frame's components of ≥ ``MIN_AREA`` pixels;
    - same size: its area is within ``AREA_TOLERANCE`` (relative) of the median area over the frames
      that have an object;
    - no teleport: its centroid lies within half the object's size (√median area / 2) of the
      centroid in the nearest earlier frame that has an object. This assumes consecutive frames, as
      in a clip at the world's speed; a clip subsampled to a few frames can fail it legitimately.

    It is 0.0 when nothing was found. ``start`` is the object's centroid (x, y) in pixels in the
    first frame that has one.
    """

    color: str | None
    shape: str | None
    motion: str | None
    consistency: float
    found: bool
    start: tuple[float, float] | None = None


NOTHING = Judgement(color=None, shape=None, motion=None, consistency=0.0, found=False)


@dataclass(frozen=True)
class _Track:
    """Per-frame measurements of the object (the largest component); arrays indexed by frame."""

    present: np.ndarray  # bool: the largest component has at least MIN_AREA pixels
    area: np.ndarray  # pixels in the largest component
    dominance: np.ndarray  # largest component's area / all foreground area
    centroid: np.ndarray  # (T, 2) coverage-weighted x, y in pixels; meaningful where present
    rows: np.ndarray  # (T, H) coverage mass per image row around the object
    cols: np.ndarray  # (T, W) coverage mass per image column around the object


def judge(frames: np.ndarray) -> Judgement:
    """Read colour, shape, motion and temporal consistency from uint8 frames (T, H, W, 3), T ≥ 2,
    H and W ≥ 8. Raises ValueError for any other shape; returns ``NOTHING`` (found False) for a clip
    that shows only background."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2 or min(frames.shape[1:3]) < 8:
        raise ValueError(f"expected frames of shape (T>=2, H>=8, W>=8, 3), got {frames.shape}")
    pixels = frames.astype(np.float32)
    background = np.median(_border(pixels), axis=0)
    rough = _rough_colour(pixels, background)
    if rough is None:
        return NOTHING
    chosen, area, dominance = _largest_components(_label(_coverage(pixels, background, rough) >= 0.5))
    present = area >= MIN_AREA
    if not present.any():
        return NOTHING
    chosen &= present[:, None, None]
    core = _erode(chosen, _EDGE)
    colour = np.median(pixels[core if core.any() else chosen], axis=0)
    track = _track(_coverage(pixels, background, colour) * _dilate(chosen, _EDGE), present, area, dominance)
    return Judgement(
        color=_COLOR_NAMES[int(np.linalg.norm(_COLOR_TABLE - colour, axis=1).argmin())],
        shape=_shape(track),
        motion=_motion(track),
        consistency=_consistency(track),
        found=True,
        start=tuple(float(v) for v in track.centroid[int(np.argmax(track.present))]),  # type: ignore[arg-type]
    )


def score(judgement: Judgement, shape: str, color: str, motion: str) -> dict[str, bool]:
    """Per-attribute correctness of a reading against the prompt's attributes; all False if not found."""
    return {
        "color": judgement.color == color,
        "shape": judgement.shape == shape,
        "motion": judgement.motion == motion,
    }


def accuracy(results: list[dict[str, bool]]) -> dict[str, float]:
    """The fraction of results right for each attribute (``score``'s colour, shape and motion, or
    whatever the results name); an empty list gives colour, shape and motion all 0.0."""
    keys = tuple(results[0]) if results else ("color", "shape", "motion")
    if not results:
        return dict.fromkeys(keys, 0.0)
    return {key: sum(r[key] for r in results) / len(results) for key in keys}


def _border(pixels: np.ndarray) -> np.ndarray:
    b = _BORDER
    return np.concatenate([
        pixels[:, :b].reshape(-1, 3), pixels[:, -b:].reshape(-1, 3),
        pixels[:, b:-b, :b].reshape(-1, 3), pixels[:, b:-b, -b:].reshape(-1, 3),
    ])


def _rough_colour(pixels: np.ndarray, background: np.ndarray) -> np.ndarray | None:
    """A first guess at the object's colour (blended edges pull it towards the background), or None
    when nothing stands out from the background."""
    # Distances of 3×3 means: a third of the noise, so noisy background rarely outranks the object.
    h, w = pixels.shape[1:3]
    padded = np.pad(pixels, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    smooth = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    distance = np.linalg.norm(smooth - background, axis=-1)
    inner = distance >= float(np.percentile(distance, PEAK_PERCENTILE)) / 2
    colour = np.median(pixels[inner], axis=0)
    if np.linalg.norm(colour - background) < MIN_CONTRAST:
        return None
    return colour


def _coverage(pixels: np.ndarray, background: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Unclipped projection on the background→colour line: 0 background, 1 object, noise either way."""
    axis = colour - background
    return (pixels - background) @ axis / float(axis @ axis)


def _neighbourhood_max(values: np.ndarray) -> np.ndarray:
    """Per frame, each pixel's maximum over its 3×3 neighbourhood (zero outside the frame)."""
    h, w = values.shape[1:]
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1)))
    return np.max([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = _neighbourhood_max(mask)
    return mask


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~_dilate(~mask, steps)


def _label(mask: np.ndarray) -> np.ndarray:
    """8-connected components within each frame of a (T, H, W) mask: 0 off the mask, otherwise a
    label shared by exactly the pixels of one component (its largest flat index + 1)."""
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        spread = np.where(mask, _neighbourhood_max(labels), 0)
        # Pointer jumping: a label names a pixel of the same component whose own label may have grown
        # further; following it takes log(diameter) rounds instead of the diameter.
        jumped = np.where(mask, spread.ravel()[np.maximum(spread - 1, 0)], 0)
        if np.array_equal(jumped, labels):
            return labels
        labels = jumped


def _largest_components(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the largest component's mask, its area in pixels, and its share of the area of all
    components of at least ``MIN_AREA`` pixels."""
    frames, h, w = labels.shape
    counts = np.bincount(labels.ravel(), minlength=labels.size + 1)[1:].reshape(frames, h * w)
    best = counts.argmax(axis=1)
    area = counts[np.arange(frames), best]
    chosen = labels == (np.arange(frames) * h * w + best + 1)[:, None, None]
    # Specks below MIN_AREA are noise; only components that could be objects compete with the largest.
    foreground = np.where(counts >= MIN_AREA, counts, 0).sum(axis=1)
    dominance = np.divide(area, foreground, out=np.zeros(frames), where=foreground > 0)
    return chosen, area, dominance


def _track(mass: np.ndarray, present: np.ndarray, area: np.ndarray, dominance: np.ndarray) -> _Track:
    rows, cols = mass.sum(axis=2), mass.sum(axis=1)
    total = np.maximum(rows.sum(axis=1), 1e-9)
    centroid = np.stack([cols @ np.arange(cols.shape[1]), rows @ np.arange(rows.shape[1])], axis=1)
    return _Track(present, area, dominance, centroid / total[:, None], rows, cols)


def _shape(track: _Track) -> str:
    rows = _aligned_mean(track.rows[track.present], track.centroid[track.present, 1])
    cols = _aligned_mean(track.cols[track.present], track.centroid[track.present, 0])
    fill = rows.sum() / max(rows.max() * cols.max(), 1e-9)
    lopsided = max(abs(_skewness(rows)), abs(_skewness(cols)))
    if lopsided >= LOPSIDED or fill < TRIANGLE_FILL:
        return "triangle"
    return "circle" if fill < CIRCLE_BELOW else "square"


def _aligned_mean(profiles: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The mean of (N, L) profiles after shifting each so its centre (rounded) sits at index L."""
    count, length = profiles.shape
    shifted = np.zeros((count, 2 * length))
    offsets = length - np.clip(np.round(centres), 0, length).astype(int)
    shifted[np.arange(count)[:, None], offsets[:, None] + np.arange(length)] = profiles
    return shifted.mean(axis=0)


def _skewness(profile: np.ndarray) -> float:
    """Skewness of a profile read as a distribution of mass over its indices; 0 for no spread."""
    positions = np.arange(len(profile))
    total = max(profile.sum(), 1e-9)
    mean = profile @ positions / total
    variance = profile @ (positions - mean) ** 2 / total
    if variance <= 0:
        return 0.0
    return float(profile @ (positions - mean) ** 3 / total / variance**1.5)


def _motion(track: _Track) -> str:
    """Direction of the least-squares line through the centroids; still below a third of the travel."""
    t = np.flatnonzero(track.present)
    span = len(track.present) - 1
    if len(t) < 2:
        return "still"
    dx, dy = np.polyfit(t.astype(np.float64), track.centroid[t], 1)[0] * span
    if np.hypot(dx, dy) < STILL_FRACTION * SPEED * span:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"  # image rows grow downwards


def _consistency(track: _Track) -> float:
    present = track.present
    median_area = float(np.median(track.area[present]))
    intact = present & (track.dominance >= DOMINANT_FRACTION)
    intact &= np.abs(track.area - median_area) <= AREA_TOLERANCE * median_area
    jump_limit = np.sqrt(median_area) / 2
    previous = None
    for t in np.flatnonzero(present):
        if previous is not None and np.hypot(*(track.centroid[t] - track.centroid[previous])) > jump_limit:
            intact[t] = False
        previous = t
    return float(intact.mean())
