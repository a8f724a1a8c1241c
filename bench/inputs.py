"""Image to video and remix on the micro model, through the server's own runner and inputs (the code a
job runs: ``PipelineRunner`` with ``RowInputs`` over local storage), judged by the micro evaluator.

1. Image to video: the evaluator's 21 held-out first frames (every motion), each with a prompt asking
   for its motion, at ``--seeds``: motion right, and "kept" (the clip's object has frame 0's colour
   and shape, within 3.5 px of where frame 0 had it), as ``reelserve micro eval`` reads them.
2. Remix at ``--strength``: a text-to-video clip of "a {colour} {shape} moving {motion}", then a remix
   of it asking for another colour: the colour changed as asked, and the rest kept (the source's
   shape and motion as judged on the source, and its start within 3.5 px).
3. Model time: one fresh clip against one remix of it (batch 1, the median of ``--repeats``), timed
   around the runner's call as a job's ``inference_s`` is.

    .venv/bin/python bench/inputs.py [--seeds 0 1 --guidance 3 --strength 0.5 --repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
import torch
from _harness import machine, median, print_table

from reelserve.engine.row_inputs import RowInputs
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.storage_keys import latents_key, reference_key, source_latents_key
from reelserve.inputs.images import read_reference, to_png
from reelserve.micro.adherence import first_frame_score
from reelserve.micro.dataset import first_frame_prompts
from reelserve.micro.evaluate import judge
from reelserve.models import LoadOptions, load_model
from reelserve.schemas import GenerationParams
from reelserve.storage.local import LocalStorage

NEW_COLOUR = {"red": "blue", "green": "yellow", "blue": "red", "yellow": "magenta", "white": "green",
              "magenta": "white"}


def params(prompt: str, seed: int, guidance: float, **inputs: object) -> GenerationParams:
    return GenerationParams(model="micro", prompt=prompt, width=64, height=64, num_frames=17, fps=8,
                            num_inference_steps=25, guidance_scale=guidance, seed=seed, **inputs)


def frames_of(outcome: object, key: str) -> np.ndarray:
    return (np.clip(outcome.frames[key], 0, 1) * 255).round().astype(np.uint8)  # type: ignore[attr-defined]


def image_to_video(runner: PipelineRunner, storage: LocalStorage, seeds: list[int], guidance: float) -> list[str]:
    scores = []
    for i, case in enumerate(first_frame_prompts()):
        reference = read_reference(to_png(case.first_frame()), 64, 64, None)
        batch = []
        for seed in seeds:
            key = f"i2v-{i}-{seed}"
            storage.put(reference_key(key), to_png(reference.pixels))
            batch.append((key, params(case.prompt.prompt, seed, guidance, input_reference=reference.digest)))
        outcome = runner.run(batch)
        scores += [first_frame_score(judge(frames_of(outcome, key)), case) for key, _ in batch]
    return [f"image to video (guidance {guidance:g})", str(len(scores)), "–",
            _share(s["motion"] for s in scores), _share(s["kept"] for s in scores)]


def remixes(runner: PipelineRunner, storage: LocalStorage, seeds: list[int], strength: float) -> list[str]:
    changed, kept, shown = [], [], 0
    for (shape, colour, motion), seed in product(product(("circle", "square", "triangle"), ("red", "yellow"),
                                                         ("left", "right", "up", "down")), seeds):
        key = f"src-{shape}-{colour}-{motion}-{seed}"
        source = runner.run([(key, params(f"a {colour} {shape} moving {motion}", seed, 5.0))])
        before = judge(frames_of(source, key))
        if (before.color, before.shape, before.motion) != (colour, shape, motion):
            continue  # a remix can only keep what the source had
        shown += 1
        storage.put(source_latents_key(f"re-{key}"), storage.get(latents_key(key)))
        new = NEW_COLOUR[colour]
        remix = params(f"a {new} {shape} moving {motion}", seed, 5.0, source=f"latents-of-{key}", strength=strength)
        after = judge(frames_of(runner.run([(f"re-{key}", remix)]), f"re-{key}"))
        changed.append(after.color == new)
        placed = after.start is not None and before.start is not None and \
            np.hypot(after.start[0] - before.start[0], after.start[1] - before.start[1]) <= 3.5
        kept.append(after.shape == shape and after.motion == motion and placed)
    return [f"remix at strength {strength:g}: colour asked for / rest kept", str(shown), _share(changed), "–",
            _share(kept)]


def model_time(runner: PipelineRunner, storage: LocalStorage, strength: float, repeats: int) -> list[list[str]]:
    fresh_s, remix_s = [], []
    for i in range(repeats + 1):  # the first round warms up
        key = f"time-{i}"
        started = time.perf_counter()
        runner.run([(key, params("a red circle moving right", i, 5.0))])
        fresh = time.perf_counter() - started
        storage.put(source_latents_key(f"re-{key}"), storage.get(latents_key(key)))
        started = time.perf_counter()
        runner.run([(f"re-{key}", params("a blue circle moving right", i, 5.0, source=key, strength=strength))])
        if i:
            fresh_s.append(fresh)
            remix_s.append(time.perf_counter() - started)
    return [["fresh clip (25 steps)", f"{median(fresh_s):.3f}", "1.00"],
            [f"remix at {strength:g} ({int(25 * strength)} steps, from kept latents)", f"{median(remix_s):.3f}",
             f"{median(remix_s) / median(fresh_s):.2f}"]]


def _share(values: object) -> str:
    values = list(values)  # type: ignore[call-overload]
    return f"{100 * sum(values) / len(values):.1f} %" if values else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--guidance", type=float, default=3.0, help="image to video's (micro's operating point)")
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model("micro", LoadOptions(device="cpu"))
    with tempfile.TemporaryDirectory() as directory:
        storage = LocalStorage(Path(directory))
        runner = PipelineRunner(loaded.pipeline, loaded.device, loaded.max_sequence_length,
                                inputs=RowInputs(storage, keep_latents=True))
        with torch.inference_mode():
            quality = [image_to_video(runner, storage, args.seeds, args.guidance),
                       remixes(runner, storage, args.seeds, args.strength)]
            timing = model_time(runner, storage, args.strength, args.repeats)
    print_table(f"{machine()}; micro, 64x64x17, 25 steps, seeds {args.seeds}",
                ["set", "clips", "colour as asked", "motion", "kept"], quality)
    print_table(f"{machine()}; micro, model time per clip, batch 1, median of {args.repeats}",
                ["run", "seconds", "ratio"], timing)


if __name__ == "__main__":
    main()
