"""Seconds to generate one micro clip (64x64, 17 frames, 25 steps, guidance 5, batch 1), timed around
``LoadedModel.generate`` (the call the runner makes), for each model directory given, side by side:
two rounds, each a warm-up then the median of 5 clips.

    python bench/micro_serving_cost.py reelserve/models/weights/micro OTHER_DIR ...
"""

from __future__ import annotations

import statistics
import sys
import time

from reelserve.models import LoadOptions, load_model

PROMPT = ["a red circle moving right"]


def main() -> None:
    models = {path: load_model("micro", LoadOptions(path=path, device="cpu")) for path in sys.argv[1:]}
    medians: dict[str, list[float]] = {path: [] for path in models}
    for _ in range(2):
        for path, model in models.items():
            model.generate(PROMPT, 64, 64, 17, 25)
            times = []
            for seed in range(5):
                started = time.perf_counter()
                model.generate(PROMPT, 64, 64, 17, 25, seeds=[seed])
                times.append(time.perf_counter() - started)
            medians[path].append(statistics.median(times))
    print("| model directory | s a clip (round 1) | s a clip (round 2) |")
    print("|---|---|---|")
    for path, values in medians.items():
        print(f"| {path} | {values[0]:.3f} | {values[1]:.3f} |")


if __name__ == "__main__":
    main()
