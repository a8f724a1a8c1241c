"""The synthetic training and evaluation sets: deterministic given a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelserve.micro.captions import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, caption, combinations, paraphrase
from reelserve.micro.world import BACKGROUNDS, Scene, random_scene, render


@dataclass(frozen=True)
class Sample:
    """One captioned clip, before rendering."""

    scene: Scene
    caption: str

    def render(self) -> np.ndarray:
        """uint8 frames, (FRAMES, SIZE, SIZE, 3)."""
        return render(self.scene)


def training_samples(count: int, seed: int) -> list[Sample]:
    """``count`` samples drawn from the training combinations and templates only."""
    return _samples(count, seed, combinations(held_out=False), TRAIN_TEMPLATES)


def held_out_samples(count: int, seed: int) -> list[Sample]:
    """``count`` samples of held-out combinations phrased with held-out templates."""
    return _samples(count, seed, combinations(held_out=True), HELD_OUT_TEMPLATES)


def _samples(count: int, seed: int, combos: list, templates: tuple[str, ...]) -> list[Sample]:
    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUNDS)
    samples = []
    for _ in range(count):
        shape, color, motion = combos[rng.integers(len(combos))]
        background = backgrounds[rng.integers(len(backgrounds))]
        scene = random_scene(rng, shape, color, motion, background)
        samples.append(Sample(scene, caption(rng, shape, color, motion, background, templates)))
    return samples


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt with the attributes a faithful clip must show."""

    prompt: str
    shape: str
    color: str
    motion: str


def eval_prompts() -> list[EvalPrompt]:
    """The fixed held-out prompt set: every held-out combination once, in a held-out phrasing."""
    return _prompt_set(combinations(held_out=True), HELD_OUT_TEMPLATES, seed=20261121)


def seen_prompts() -> list[EvalPrompt]:
    """A fixed control set as large as ``eval_prompts``: training combinations in training phrasings.

    Its accuracy next to the held-out set's separates "does not follow the text" from "does not
    generalise to unseen combinations and phrasings".
    """
    combos = combinations(held_out=False)
    picks = np.random.default_rng(20261122).choice(len(combos), size=len(eval_prompts()), replace=False)
    return _prompt_set([combos[i] for i in sorted(picks)], TRAIN_TEMPLATES, seed=20261123)


def paraphrase_prompts(count: int = 36) -> list[EvalPrompt]:
    """A fixed set of ``count`` prompts phrased only with words no training caption contains
    ("crimson orb gliding leftwards"), over every combination, seen and held out alike."""
    rng = np.random.default_rng(20261204)
    combos = combinations(held_out=False) + combinations(held_out=True)
    picks = rng.choice(len(combos), size=count, replace=False)
    return [EvalPrompt(paraphrase(rng, *combos[i]), *combos[i]) for i in sorted(picks)]


@dataclass(frozen=True)
class FirstFramePrompt:
    """An image-to-video case: the first frame of ``scene`` and a prompt asking for its motion."""

    prompt: EvalPrompt
    scene: Scene

    def first_frame(self) -> np.ndarray:
        """uint8 (SIZE, SIZE, 3)."""
        return render(self.scene)[0]


def first_frame_prompts() -> list[FirstFramePrompt]:
    """Every held-out combination once (all five motions among them), as a first frame no training
    clip had and a held-out phrasing of the scene."""
    rng = np.random.default_rng(20261205)
    backgrounds = list(BACKGROUNDS)
    cases = []
    for shape, color, motion in combinations(held_out=True):
        background = backgrounds[rng.integers(len(backgrounds))]
        scene = random_scene(rng, shape, color, motion, background)
        text = caption(rng, shape, color, motion, background, HELD_OUT_TEMPLATES)
        cases.append(FirstFramePrompt(EvalPrompt(text, shape, color, motion), scene))
    return cases


def _prompt_set(combos: list, templates: tuple[str, ...], seed: int) -> list[EvalPrompt]:
    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUNDS)
    prompts = []
    for shape, color, motion in combos:
        background = backgrounds[rng.integers(len(backgrounds))]
        text = caption(rng, shape, color, motion, background, templates)
        prompts.append(EvalPrompt(text, shape, color, motion))
    return prompts
