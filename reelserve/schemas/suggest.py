"""Nearest valid values, for error messages that say what to send instead of only what was wrong."""

from __future__ import annotations

from collections.abc import Sequence


def nearest(value: float, valid: Sequence[float]) -> list[float]:
    """The valid value just below ``value`` and the one just above (one of them at an end), sorted."""
    below = [v for v in valid if v <= value]
    above = [v for v in valid if v >= value]
    picks = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return sorted(set(picks))


def spelled(values: Sequence[float], unit: str = "") -> str:
    """``[9, 13]`` -> ``"9 or 13"``; numbers without trailing zeros."""
    return " or ".join(f"{v:g}{unit}" for v in values)


def multiples(step: int, maximum: int) -> list[int]:
    return list(range(step, maximum + 1, step))


def frame_counts(temporal_multiple: int, maximum: int) -> list[int]:
    """The counts a model makes: k·n + 1, up to ``maximum``."""
    return list(range(1, maximum + 1, temporal_multiple))


def nearest_sizes(width: int, height: int, step: int, max_width: int, max_height: int) -> str:
    """e.g. 100x100 at multiples of 16 -> ``"96x96 or 112x112"``."""
    widths = nearest(width, multiples(step, max_width))
    heights = nearest(height, multiples(step, max_height))
    if len(widths) == 1:
        widths = widths * len(heights)
    if len(heights) == 1:
        heights = heights * len(widths)
    return " or ".join(f"{w:g}x{h:g}" for w, h in zip(widths, heights, strict=True))
