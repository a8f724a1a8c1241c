"""Run the micro model's held-out prompts under each acceleration and measure speed and quality.

Every configuration makes the same (prompt, seed) clips as the float32 eager baseline, in the same
batches, so the clips compare pixel for pixel (PSNR, SSIM) and attribute for attribute (the micro
judge's colour, shape and motion readings). Time is the wall time of the generation calls after
one warm-up call (compilation and ONNX export happen there and are reported apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reelserve.accel.options import PRESETS, AccelerationOptions
from reelserve.micro.dataset import EvalPrompt
from reelserve.micro.evaluate import accuracy, judge, score
from reelserve.micro.world import FRAMES, SIZE
from reelserve.models import LoadOptions, load_model
from reelserve.quality.image_metrics import psnr, ssim

MODEL = "micro"
ATTRIBUTES = ("color", "shape", "motion")
ADHERENCE_BOUND = 2.0  # points of mean adherence a safe configuration may lose


@dataclass(frozen=True)
class Configuration:
    """One way to run the model. ``steps`` None: the baseline's. A ``safe`` one is gated: it may
    lose at most ``ADHERENCE_BOUND`` points of mean adherence, and its PSNR must reach ``psnr_floor``."""

    name: str
    accelerations: AccelerationOptions = field(default_factory=AccelerationOptions)
    dtype: str = "float32"
    steps_fraction: float = 1.0
    safe: bool = False
    psnr_floor: float | None = None
    note: str = ""


@dataclass
class Outcome:
    """What one configuration measured."""

    config: Configuration
    steps: int
    clips: list[np.ndarray] = field(repr=False)
    seconds: float  # generation wall time, warm-up excluded
    warm_up_s: float
    adherence: dict[str, float]  # attribute -> % of clips read as prompted
    skipped_fraction: float | None  # of block computations; None where not observable (ONNX)
    skipped_passes: float | None  # per video, in whole transformer passes (a CFG step is two)
    psnr: float | None = None  # vs the baseline; None for the baseline itself
    ssim: float | None = None
    speedup: float | None = None

    @property
    def seconds_per_video(self) -> float:
        return self.seconds / len(self.clips)

    @property
    def mean_adherence(self) -> float:
        return float(np.mean([self.adherence[a] for a in ATTRIBUTES]))


BASELINE = Configuration("float32 eager", note="the reference every row is compared with")

SINGLE_OPTIONS: tuple[Configuration, ...] = (
    Configuration("bfloat16", dtype="bfloat16", note="weights and activations in bfloat16 (VAE float32)"),
    Configuration("cfg_batching", AccelerationOptions(cfg_batching=True), safe=True, psnr_floor=60.0),
    Configuration("shared_time_embedding", AccelerationOptions(shared_time_embedding=True), safe=True, psnr_floor=60.0),
    Configuration("compile", AccelerationOptions(compile=True), safe=False, note="regional torch.compile"),
    Configuration("fbcache", AccelerationOptions(step_cache="fbcache")),
    Configuration("magcache", AccelerationOptions(step_cache="magcache")),
    Configuration("taylorseer", AccelerationOptions(step_cache="taylorseer")),
    Configuration("pab", AccelerationOptions(step_cache="pab")),
    Configuration("int8", AccelerationOptions(quantization="int8")),
    Configuration("onnx", AccelerationOptions(backend="onnx"), safe=True, psnr_floor=60.0),
    Configuration("vae_slicing", AccelerationOptions(vae_slicing=True), safe=True, psnr_floor=60.0),
    Configuration("channels_last", AccelerationOptions(channels_last=True), safe=True, psnr_floor=60.0),
    Configuration("fused_ffn", AccelerationOptions(fused_ffn=True), safe=True, psnr_floor=60.0),
)

# PSNR floors of the step-cache presets: a moving object one pixel off costs many dB, so at the CI
# workload's 12 steps (fewer for MagCache to fit) balanced measured 12.0 dB and fast 13.1 on micro v2
# with no adherence lost; at 25 steps 28.2 and 24.7. The adherence bound is the one that bites.
PRESET_CONFIGURATIONS: tuple[Configuration, ...] = tuple(
    Configuration(
        f"preset {preset.name}",
        preset.accelerations,
        dtype="float32",
        steps_fraction=preset.steps_fraction,
        safe=True,
        psnr_floor=_floor,
        note=preset.summary,
    )
    for preset, _floor in ((PRESETS["quality"], 60.0), (PRESETS["balanced"], 10.0), (PRESETS["fast"], 10.0))
)

ALL_CONFIGURATIONS = (BASELINE, *SINGLE_OPTIONS, *PRESET_CONFIGURATIONS)


def sweep_configurations() -> list[Configuration]:
    """Each step cache over a range of its knob: how the thresholds in step_cache.py were chosen."""
    knobs = {
        "fbcache": (0.03, 0.05, 0.08, 0.12, 0.2),
        "magcache": (0.04, 0.08, 0.12, 0.2, 0.3),
        "taylorseer": (2, 3, 4, 6),
        "pab": (2, 3, 4, 6),
    }
    return [
        Configuration(f"{kind} {knob:g}", AccelerationOptions(step_cache=kind, step_cache_threshold=knob))
        for kind, values in knobs.items()
        for knob in values
    ]


@dataclass(frozen=True)
class Workload:
    prompts: list[EvalPrompt]
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 25
    guidance: float = 5.0
    batch: int = 6

    def pairs(self) -> list[tuple[EvalPrompt, int]]:
        return [(p, seed) for p in self.prompts for seed in self.seeds]


def measure(
    config: Configuration, workload: Workload, work_dir: Path, on_batch: Callable[[int, int], None] | None = None
) -> Outcome:
    """Load the micro model under ``config`` and make every clip of ``workload``."""
    options = LoadOptions(
        device="cpu", dtype=config.dtype, accelerations=config.accelerations, onnx_cache_dir=str(work_dir / "onnx")
    )
    model = load_model(MODEL, options)
    steps = max(1, round(workload.steps * config.steps_fraction))
    pairs = workload.pairs()

    def generate(chunk: list[tuple[EvalPrompt, int]]) -> np.ndarray:
        prompts, seeds = [p.prompt for p, _ in chunk], [s for _, s in chunk]
        return model.generate(prompts, SIZE, SIZE, FRAMES, steps, seeds=seeds, guidance=workload.guidance)

    started = time.perf_counter()
    generate(pairs[: workload.batch])  # compiles, exports, calibrates: not part of the timing
    warm_up_s = time.perf_counter() - started
    skips = model.accelerated.skips if model.accelerated is not None else None
    if skips is not None:
        skips.reset()
    clips: list[np.ndarray] = []
    seconds = 0.0
    calls = 0
    for first in range(0, len(pairs), workload.batch):
        calls += 1
        chunk = pairs[first : first + workload.batch]
        started = time.perf_counter()
        frames = generate(chunk)
        seconds += time.perf_counter() - started
        clips.extend((np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8) for video in frames)
        if on_batch:
            on_batch(len(clips), len(pairs))
    correct = [score(judge(clip), p.shape, p.color, p.motion) for clip, (p, _) in zip(clips, pairs, strict=True)]
    observed = skips is not None and skips.passes > 0
    return Outcome(
        config=config,
        steps=steps,
        clips=clips,
        seconds=seconds,
        warm_up_s=warm_up_s,
        adherence={k: 100.0 * v for k, v in accuracy(correct).items()},
        skipped_fraction=skips.skipped_fraction if observed else None,
        # Every clip of a call goes through the same passes: per video is per call.
        skipped_passes=skips.skipped_passes / calls if observed else None,
    )


def compare(outcome: Outcome, baseline: Outcome) -> Outcome:
    """Fill in ``outcome``'s PSNR, SSIM and speed-up against ``baseline``."""
    outcome.psnr = float(np.mean([psnr(b, c) for b, c in zip(baseline.clips, outcome.clips, strict=True)]))
    outcome.ssim = float(np.mean([ssim(b, c) for b, c in zip(baseline.clips, outcome.clips, strict=True)]))
    outcome.speedup = baseline.seconds / outcome.seconds if outcome.seconds > 0 else None
    return outcome


def gate(outcomes: list[Outcome], baseline: Outcome) -> list[str]:
    """Why each safe configuration fails its bounds; empty when all pass."""
    failures = []
    for o in outcomes:
        if not o.config.safe:
            continue
        lost = baseline.mean_adherence - o.mean_adherence
        if lost > ADHERENCE_BOUND:
            failures.append(f"{o.config.name}: mean adherence fell {lost:.1f} points (bound {ADHERENCE_BOUND:g})")
        if o.config.psnr_floor is not None and (o.psnr is None or o.psnr < o.config.psnr_floor):
            failures.append(f"{o.config.name}: PSNR {o.psnr:.1f} dB is below its floor {o.config.psnr_floor:g} dB")
    return failures


def run(
    configs: list[Configuration], workload: Workload, work_dir: Path,
    on_config: Callable[[Configuration], None] | None = None,
) -> tuple[Outcome, list[Outcome]]:
    """The baseline, then every configuration compared with it."""
    torch.manual_seed(0)
    baseline = measure(BASELINE, workload, work_dir)
    outcomes = []
    for config in configs:
        if config == BASELINE:
            continue
        if on_config:
            on_config(config)
        outcomes.append(compare(measure(config, workload, work_dir), baseline))
    return baseline, outcomes
