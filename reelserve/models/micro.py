"""Where the micro model's weights live. Training code is in ``reelserve.micro``; serving needs only this.

The weights are an ordinary diffusers pipeline directory, committed with the package and loaded
through ``load_wan_pipeline`` like any Wan checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from reelserve.schemas.model_info import ModelCard

MICRO_WEIGHTS = Path(__file__).parent / "weights" / "micro"
# LoRA adapters trained on the committed weights (`reelserve micro lora`), each with its <name>.json.
MICRO_ADAPTERS = Path(__file__).parent / "weights" / "micro-adapters"
# Matches reelserve.micro.architecture.MAX_SEQUENCE_LENGTH, the length it was trained with.
MICRO_MAX_SEQUENCE_LENGTH = 32
# What the micro world holds: said on the model object, in the playground and in the warning a
# prompt of only unknown words gets.
MICRO_CARD = ModelCard(
    about=(
        "The micro model draws one shape (circle, square or triangle) in red, green, blue, yellow, white or "
        "magenta, moving left, right, up or down or staying still, on a black, grey or navy background, "
        "at 64x64 and 17 frames: e.g. \"a red circle moving right\"."
    ),
    examples=[
        "a yellow square moving up",
        "a red circle moving right on a black background",
        "a blue triangle moving left over grey",
        "a white square moving down",
        "a magenta ball staying still on navy",
    ],
    trained_sizes=[(64, 64)],
    trained_frames=[17],
)
