"""Captions for micro-world scenes: templates, synonyms and word-order variation.

Some attribute combinations and some templates never appear in training (``HELD_OUT_*``); the
evaluation prompts use exactly those, so they measure generalisation rather than memory.
"""

from __future__ import annotations

import re

import numpy as np

from reelserve.micro.world import COLORS, MOTIONS, SHAPES, Motion, Shape

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "dot", "round shape"),
    "square": ("square", "box", "block", "cube"),
    "triangle": ("triangle", "wedge", "pyramid", "triangular shape"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "green": ("green", "lime"),
    "blue": ("blue", "azure"),
    "yellow": ("yellow", "golden"),
    "white": ("white", "snowy"),
    "magenta": ("magenta", "pink", "purple"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "rolling to the left", "drifting left", "moves left", "going leftward", "sliding left"),
    "right": ("moving right", "rolling to the right", "drifting right", "moves right", "going rightward", "sliding right"),
    "up": ("moving up", "drifting upward", "rising", "moves up", "floating upward", "going up"),
    "down": ("moving down", "falling", "sinking", "moves down", "dropping downward", "going down"),
    "still": ("staying still", "not moving", "resting", "stays put", "standing still", "motionless"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "dark"),
    "grey": ("grey", "gray"),
    "navy": ("navy", "midnight"),
}

# {c} colour, {s} shape, {m} motion, {b} background. Templates without {b} leave it to chance.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {s} {m} on a {b} background",
    "{c} {s} {m}",
    "a {s}, {c}, {m} over {b}",
    "a {c} {s} {m}",
    "{b} background, {c} {s} {m}",
    "the {c} {s} is {m}",
    "a {s} in {c} {m} against {b}",
    "{c} {s}, {m}, {b} backdrop",
)
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "over a {b} background a {c} {s} is {m}",
    "{m}: one {c} {s}",
    "a video of a {c} {s} {m} in front of {b}",
)

# Words no training caption contains, for the paraphrase set: does the text encoder carry a meaning
# to the model through words it was never trained on?
PARAPHRASE_COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "ruby", "cherry"),
    "green": ("emerald", "jade", "mint"),
    "blue": ("cobalt", "sapphire", "cerulean"),
    "yellow": ("lemon", "canary", "sunflower"),
    "white": ("ivory", "pearl", "milky"),
    "magenta": ("fuchsia", "violet", "orchid"),
}
PARAPHRASE_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "orb", "sphere", "coin"),
    "square": ("tile", "crate", "brick"),
    "triangle": ("arrowhead", "cone", "delta"),
}
PARAPHRASE_MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("gliding leftwards", "heading west", "travelling westward"),
    "right": ("gliding rightwards", "heading east", "travelling eastward"),
    "up": ("ascending", "climbing", "lifting skyward"),
    "down": ("descending", "plummeting", "diving"),
    "still": ("stationary", "frozen in place", "idle"),
}
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "{c} {s} {m}",
    "one {c} {s}, {m}",
    "we see a {c} {s} {m}",
    "{m}, a {c} {s}",
)

# (shape, colour) and (colour, motion) pairs never shown in training, in any phrasing.
HELD_OUT_SHAPE_COLOR: frozenset[tuple[str, str]] = frozenset(
    {("circle", "green"), ("square", "magenta"), ("triangle", "white")}
)
HELD_OUT_COLOR_MOTION: frozenset[tuple[str, str]] = frozenset({("blue", "down"), ("yellow", "left")})


def is_held_out(shape: str, color: str, motion: str) -> bool:
    return (shape, color) in HELD_OUT_SHAPE_COLOR or (color, motion) in HELD_OUT_COLOR_MOTION


def combinations(held_out: bool) -> list[tuple[Shape, str, Motion]]:
    """Every (shape, colour, motion) triple in the training split, or in the held-out split."""
    return [
        (shape, color, motion)
        for shape in SHAPES
        for color in COLORS
        for motion in MOTIONS
        if is_held_out(shape, color, motion) == held_out
    ]


def caption(
    rng: np.random.Generator, shape: str, color: str, motion: str, background: str, templates: tuple[str, ...]
) -> str:
    """A caption for the scene, with a random template and random synonyms."""
    template = templates[rng.integers(len(templates))]
    text = template.format(
        c=_pick(rng, COLOR_WORDS[color]),
        s=_pick(rng, SHAPE_WORDS[shape]),
        m=_pick(rng, MOTION_WORDS[motion]),
        b=_pick(rng, BACKGROUND_WORDS[background]),
    )
    # "a" before a vowel sound reads as a typo to a person; keep captions natural.
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def paraphrase(rng: np.random.Generator, shape: str, color: str, motion: str) -> str:
    """A description of the scene in words no training caption uses (background left to chance)."""
    template = PARAPHRASE_TEMPLATES[rng.integers(len(PARAPHRASE_TEMPLATES))]
    text = template.format(c=_pick(rng, PARAPHRASE_COLOR_WORDS[color]), s=_pick(rng, PARAPHRASE_SHAPE_WORDS[shape]),
                           m=_pick(rng, PARAPHRASE_MOTION_WORDS[motion]))
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[rng.integers(len(words))]


def vocabulary() -> list[str]:
    """Every word a training caption can contain, sorted: the micro tokenizer's vocabulary.

    Words only the held-out templates use are left out on purpose: they become ``<unk>``, as any
    word a user types that the model never saw does.
    """
    words: set[str] = set()
    phrases = list(TRAIN_TEMPLATES)
    for table in (SHAPE_WORDS, COLOR_WORDS, MOTION_WORDS, BACKGROUND_WORDS):
        for synonyms in table.values():
            phrases.extend(synonyms)
    for phrase in phrases:
        words.update(re.findall(r"[a-z]+|[^\sa-z{}]", re.sub(r"\{[a-z]\}", " ", phrase)))
    words.add("an")
    return sorted(words)
