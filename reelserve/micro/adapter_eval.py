"""Judge an adapter of the micro model on the held-out prompts.

- A style (``evaluate_adapter``): the same prompts and seeds with and without it, each clip read for its
  style (``styles.read_style``) and for keeping what the prompt asked (colour and motion by
  ``evaluate.judge``; shape from the object's silhouette, which an outline keeps).
- A few-step distillation (``evaluate_distillation``): the model as served, then the adapter's
  recommended steps, guidance and shift without and with it; accuracy, and seconds a clip.

The adapter is loaded by diffusers' own ``load_lora_weights``, so the reading does not depend on
reelserve's serving code (``tests/models/test_lora.py`` holds that to diffusers').
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from reelserve.micro.adherence import AdherenceReport, ClipResult, GenerationSettings, generate_clips
from reelserve.micro.dataset import EvalPrompt
from reelserve.micro.evaluate import judge, score
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
    """A style: every prompt at every seed without the adapter, then with it at ``scale``: (base, adapted)."""
    pairs = [(p, seed) for p in prompts for seed in settings.seeds]
    reports = []
    for run, adapted in enumerate((None, adapter)):
        with running(pipeline, adapted, scale, shift=None):
            clips, _ = generate_set(pipeline, max_sequence_length, pairs, settings, on_clips, run, 2)
        reports.append(read_clips([p for p, _ in pairs], [s for _, s in pairs], clips))
    return reports[0], reports[1]


@dataclass(frozen=True)
class SpeedRun:
    """One way of generating the set: how it was run, how well it followed the prompts, how fast."""

    label: str
    steps: int
    guidance: float
    report: AdherenceReport
    seconds_per_clip: float

    @property
    def transformer_calls(self) -> int:
        return self.steps * (2 if self.guidance > 1 else 1)


def evaluate_distillation(pipeline, max_sequence_length: int, adapter: Path, recommended: dict[str, float],
                          prompts: list[EvalPrompt], served: GenerationSettings,
                          on_clips: Callable[[int, int], None] | None = None) -> list[SpeedRun]:
    """A few-step distillation: the set as the model is served (``served``), then at the adapter's
    recommended steps, guidance and shift without it and with it."""
    fast = replace(served, steps=int(recommended["steps"]), guidance=float(recommended["guidance"]))
    shift = recommended.get("shift")
    runs = [("as served", None, served, None), ("without it", None, fast, shift), (f"with {adapter.stem}", adapter, fast, shift)]
    pairs = [(p, seed) for p in prompts for seed in served.seeds]
    results = []
    for index, (label, adapted, settings, run_shift) in enumerate(runs):
        with running(pipeline, adapted, 1.0, run_shift):
            clips, seconds = generate_set(pipeline, max_sequence_length, pairs, settings, on_clips, index, len(runs))
        judged = [ClipResult(p, seed, (verdict := judge(frames)), score(verdict, p.shape, p.color, p.motion), frames)
                  for (p, seed), frames in zip(pairs, clips, strict=True)]
        results.append(SpeedRun(label, settings.steps, settings.guidance, AdherenceReport(judged), seconds / len(pairs)))
    return results


@contextmanager
def running(pipeline, adapter: Path | None, scale: float, shift: float | None) -> Iterator[None]:
    """The pipeline with ``adapter`` loaded at ``scale`` (diffusers' own loading) and its scheduler at
    ``shift``, then as it was."""
    scheduler = pipeline.scheduler
    if shift is not None:
        pipeline.scheduler = type(scheduler).from_config({**scheduler.config, "flow_shift": shift})
    if adapter is not None:
        pipeline.load_lora_weights(str(adapter.parent), weight_name=adapter.name, adapter_name="judged")
        pipeline.set_adapters(["judged"], [scale])
    try:
        yield
    finally:
        pipeline.scheduler = scheduler
        if adapter is not None:
            pipeline.delete_adapters(["judged"])


def generate_set(pipeline, max_sequence_length: int, pairs: list[tuple[EvalPrompt, int]], settings: GenerationSettings,
                 on_clips: Callable[[int, int], None] | None, run: int, runs: int) -> tuple[list[np.ndarray], float]:
    """The clips of every (prompt, seed), and the seconds they took."""
    clips: list[np.ndarray] = []
    started = time.perf_counter()
    for first in range(0, len(pairs), settings.batch):
        chunk = pairs[first : first + settings.batch]
        clips += generate_clips(pipeline, [p.prompt for p, _ in chunk], [s for _, s in chunk], settings,
                                max_sequence_length)
        if on_clips:
            on_clips(len(clips) + run * len(pairs), runs * len(pairs))
    return clips, time.perf_counter() - started
