"""Generate the held-out prompt set with a pipeline and judge every clip: the micro quality gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reelserve.micro.dataset import EvalPrompt, FirstFramePrompt, eval_prompts, first_frame_prompts
from reelserve.micro.evaluate import Judgement, accuracy, judge, score
from reelserve.micro.world import FRAMES, SIZE

ATTRIBUTES = ("color", "motion", "shape")
FIRST_FRAME_ATTRIBUTES = ("motion", "kept")
# How far (pixels) the first frame's object may sit from where the given frame had it and still be
# "the object of frame 0": a quarter of the smallest object.
KEPT_DISTANCE = 3.5


@dataclass(frozen=True)
class GenerationSettings:
    """How each evaluation clip is generated; the defaults are the micro model's serving defaults."""

    seeds: tuple[int, ...] = (0, 1)
    steps: int = 25
    guidance: float = 5.0
    batch: int = 6  # prompts per pipeline call; rows keep their own seeded generators


@dataclass(frozen=True)
class ClipResult:
    prompt: EvalPrompt
    seed: int
    judgement: Judgement
    correct: dict[str, bool]
    frames: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class AdherenceReport:
    results: list[ClipResult]

    @property
    def accuracy(self) -> dict[str, float]:
        """Fraction of clips whose colour, motion and shape the evaluator reads as prompted."""
        return accuracy([r.correct for r in self.results])

    @property
    def consistency(self) -> float:
        return float(np.mean([r.judgement.consistency for r in self.results]))


def generate_clips(
    pipeline, prompts: list[str], seeds: list[int], settings: GenerationSettings, max_sequence_length: int
) -> list[np.ndarray]:
    """uint8 (FRAMES, SIZE, SIZE, 3) clips, one per (prompt, seed) pair, in order."""
    clips: list[np.ndarray] = []
    for first in range(0, len(prompts), settings.batch):
        rows = slice(first, first + settings.batch)
        output = pipeline(
            prompt=prompts[rows],
            negative_prompt=[""] * len(prompts[rows]),
            height=SIZE,
            width=SIZE,
            num_frames=FRAMES,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds[rows]],
            output_type="np",
            max_sequence_length=max_sequence_length,
        )
        clips.extend((np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8) for video in output.frames)
    return clips


def evaluate_pipeline(
    pipeline,
    max_sequence_length: int,
    settings: GenerationSettings | None = None,
    prompts: list[EvalPrompt] | None = None,
    on_clips: Callable[[int, int], None] | None = None,
) -> AdherenceReport:
    """Generate every prompt (default: the held-out set) at every seed and judge each clip.

    ``on_clips(done, total)`` is called after each pipeline call.
    """
    settings = settings or GenerationSettings()
    prompts = prompts if prompts is not None else eval_prompts()
    pairs = [(p, seed) for p in prompts for seed in settings.seeds]
    results: list[ClipResult] = []
    for first in range(0, len(pairs), settings.batch):
        chunk = pairs[first : first + settings.batch]
        clips = generate_clips(
            pipeline, [p.prompt for p, _ in chunk], [s for _, s in chunk], settings, max_sequence_length
        )
        for (prompt, seed), frames in zip(chunk, clips, strict=True):
            verdict = judge(frames)
            correct = score(verdict, prompt.shape, prompt.color, prompt.motion)
            results.append(ClipResult(prompt, seed, verdict, correct, frames))
        if on_clips:
            on_clips(len(results), len(pairs))
    return AdherenceReport(results)


def image_to_video(pipeline):
    """A ``WanImageToVideoPipeline`` on ``pipeline``'s own components: with ``expand_timesteps`` the
    first latent frame is given clean at timestep 0, and no image encoder is needed (as in TI2V-5B)."""
    from diffusers import WanImageToVideoPipeline

    parts = {k: v for k, v in pipeline.components.items() if k != "transformer_2"}
    i2v = WanImageToVideoPipeline(**parts, image_encoder=None, image_processor=None, expand_timesteps=True)
    i2v.set_progress_bar_config(disable=True)
    return i2v


def evaluate_image_to_video(
    pipeline,
    max_sequence_length: int,
    settings: GenerationSettings | None = None,
    cases: list[FirstFramePrompt] | None = None,
    on_clips: Callable[[int, int], None] | None = None,
) -> AdherenceReport:
    """Each case's first frame and prompt at every seed, judged for the motion asked for and for
    keeping frame 0's object (its colour, shape and place)."""
    from PIL import Image

    settings = settings or GenerationSettings()
    cases = cases if cases is not None else first_frame_prompts()
    i2v = image_to_video(pipeline)
    results: list[ClipResult] = []
    for case in cases:
        seeds = list(settings.seeds)
        output = i2v(
            image=Image.fromarray(case.first_frame()), prompt=[case.prompt.prompt] * len(seeds),
            negative_prompt=[""] * len(seeds), height=SIZE, width=SIZE, num_frames=FRAMES,
            num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds], output_type="np",
            max_sequence_length=max_sequence_length,
        )
        for seed, video in zip(seeds, output.frames, strict=True):
            frames = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
            verdict = judge(frames)
            results.append(ClipResult(case.prompt, seed, verdict, first_frame_score(verdict, case), frames))
        if on_clips:
            on_clips(len(results), len(cases) * len(settings.seeds))
    return AdherenceReport(results)


def first_frame_score(verdict: Judgement, case: FirstFramePrompt) -> dict[str, bool]:
    scene = case.scene
    placed = verdict.start is not None and np.hypot(
        verdict.start[0] + 0.5 - scene.x, verdict.start[1] + 0.5 - scene.y  # pixel centres are at +0.5
    ) <= KEPT_DISTANCE
    kept = verdict.color == scene.color and verdict.shape == scene.shape and bool(placed)
    return {"motion": verdict.motion == scene.motion, "kept": kept}
