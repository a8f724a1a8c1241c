"""Judge an adapter of the micro model: the same prompts and seeds with and without it, each clip read
for its style (``styles.read_style``) and for keeping what the prompt asked (colour and motion by
``evaluate.judge``; shape from the object's silhouette, which an outline keeps).

The adapter is loaded by diffusers' own ``load_lora_weights``, so the reading does not depend on
reelserve's serving code (``tests/models/test_lora.py`` holds that to diffusers').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelserve.micro.adherence import GenerationSettings, generate_clips
from reelserve.micro.dataset import EvalPrompt
from reelserve.micro.evaluate import judge
from reelserve.micro.styles import StyleReading, read_style

KEPT = ("color", "motion", "shape")


@dataclass(frozen=True)
class StyledClip:
    prompt: EvalPrompt
    seed: int
    style: StyleReading
    kept: dict[str, bool]  # colour, motion and (silhouette) shape as prompted
    frames: np.ndarray


@dataclass(frozen=True)
class StyleReport:
    clips: list[StyledClip]

    @property
    def outlined(self) -> float:
        return float(np.mean([c.style.outlined for c in self.clips]))

    @property
    def hollowness(self) -> float:
        return float(np.mean([c.style.hollowness for c in self.clips]))

    @property
    def kept(self) -> dict[str, float]:
        return {name: float(np.mean([c.kept[name] for c in self.clips])) for name in KEPT}

    def as_json(self) -> dict:
        clips = [{"prompt": c.prompt.prompt, "seed": c.seed, "hollowness": round(c.style.hollowness, 4),
                  "shape": c.style.shape, "kept": c.kept} for c in self.clips]
        return {"outlined": self.outlined, "hollowness": round(self.hollowness, 4), "kept": self.kept, "clips": clips}


def read_clips(prompts: list[EvalPrompt], seeds: list[int], clips: list[np.ndarray]) -> StyleReport:
    results = []
    for prompt, seed, frames in zip(prompts, seeds, clips, strict=True):
        style, verdict = read_style(frames), judge(frames)
        kept = {"color": verdict.color == prompt.color, "motion": verdict.motion == prompt.motion,
                "shape": style.shape == prompt.shape}
        results.append(StyledClip(prompt, seed, style, kept, frames))
    return StyleReport(results)


def evaluate_adapter(pipeline, max_sequence_length: int, adapter: Path, scale: float, prompts: list[EvalPrompt],
                     settings: GenerationSettings,
                     on_clips: Callable[[int, int], None] | None = None) -> tuple[StyleReport, StyleReport]:
    """Every prompt at every seed without the adapter, then with it at ``scale``: (base, adapted)."""
    pairs = [(p, seed) for p in prompts for seed in settings.seeds]
    texts, seeds = [p.prompt for p, _ in pairs], [s for _, s in pairs]
    reports = []
    for adapted in (False, True):
        if adapted:
            pipeline.load_lora_weights(str(adapter.parent), weight_name=adapter.name, adapter_name="judged")
            pipeline.set_adapters(["judged"], [scale])
        try:
            clips = []
            for first in range(0, len(pairs), settings.batch):
                clips += generate_clips(pipeline, texts[first : first + settings.batch],
                                        seeds[first : first + settings.batch], settings, max_sequence_length)
                if on_clips:
                    on_clips(len(clips) + adapted * len(pairs), 2 * len(pairs))
        finally:
            if adapted:
                pipeline.delete_adapters(["judged"])
        reports.append(read_clips([p for p, _ in pairs], seeds, clips))
    return reports[0], reports[1]
