"""Where the micro model's weights live. Training code is in ``reelserve.micro``; serving needs only this.

The weights are an ordinary diffusers pipeline directory, committed with the package and loaded
through ``load_wan_pipeline`` like any Wan checkpoint.
"""

from __future__ import annotations

from pathlib import Path

MICRO_WEIGHTS = Path(__file__).parent / "weights" / "micro"
# Matches reelserve.micro.architecture.MAX_SEQUENCE_LENGTH, the length it was trained with.
MICRO_MAX_SEQUENCE_LENGTH = 32
# What the micro world holds, for the warning a prompt of only unknown words gets.
MICRO_PROMPT_HINT = (
    "The micro model draws one shape (circle, square or triangle) in red, green, blue, yellow, white or "
    "magenta, moving left, right, up or down or staying still, on black, grey or navy, at 64x64: "
    "e.g. \"a red circle moving right\"."
)
