"""The denoiser stage: Wan's flow-matching objective in latent space, trained the Wan2.2-TI2V way.

In a share of the rows (``first_frame_share``) the first latent frame is the clean encoded first
frame at timestep 0 and the loss covers the other frames only: exactly what
``WanImageToVideoPipeline`` does with ``expand_timesteps``, so one set of weights serves text-to-video
and image-to-video. In a share of those (``first_frame_caption_swap``) the caption names another
shape and colour than the frame shows (the same motion and background): the model learns that
given a first frame, the frame decides what the object looks like and the words how it moves, so a
shape and colour never seen together in training survive image-to-video. The text encoder is frozen, so captions are encoded once, up front.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import WanPipeline
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from reelserve.micro.architecture import MAX_SEQUENCE_LENGTH
from reelserve.micro.captions import TRAIN_TEMPLATES, caption, combinations
from reelserve.micro.dataset import training_samples
from reelserve.micro.stage import restore_trainer, trainer_state, warmup_cosine
from reelserve.micro.world import BACKGROUNDS, Scene

if TYPE_CHECKING:
    from reelserve.micro.train import RunData, TrainConfig

SceneKey = tuple[str, str, str, str]  # shape, colour, motion, background


class CaptionBank:
    """``per_scene`` captions for each (shape, colour, motion, background) of the training split, plus
    the empty caption, encoded by the pipeline's own ``encode_prompt`` (so padded exactly as at
    serving time) and kept in float16."""

    def __init__(self, pipe: WanPipeline, per_scene: int, seed: int, device: torch.device, batch: int = 64) -> None:
        rng = np.random.default_rng(seed)
        keys = [(s, c, m, b) for s, c, m in combinations(held_out=False) for b in BACKGROUNDS]
        texts = [caption(rng, *key, TRAIN_TEMPLATES) for key in keys for _ in range(per_scene)]
        self.per_scene = per_scene
        self.first = {key: i * per_scene for i, key in enumerate(keys)}
        self.keys = keys
        self.empty = len(texts)
        texts.append("")
        with torch.no_grad():
            chunks = [
                pipe.encode_prompt(texts[i : i + batch], do_classifier_free_guidance=False,
                                   max_sequence_length=MAX_SEQUENCE_LENGTH, device=device)[0]
                for i in range(0, len(texts), batch)
            ]
        self.embeddings = torch.cat(chunks).half()

    def pick(self, rng: np.random.Generator, key: SceneKey, dropout: float) -> int:
        """A random caption of the scene ``key``, or the empty one with probability ``dropout`` (so
        guidance has an unconditional branch to work with)."""
        if rng.random() < dropout:
            return self.empty
        return self.first[key] + int(rng.integers(self.per_scene))

    def swapped(self, rng: np.random.Generator, key: SceneKey) -> SceneKey:
        """A training scene with ``key``'s motion and background and any shape and colour."""
        shape, color, motion, background = key
        alike = [k for k in self.keys if k[2:] == (motion, background)]
        return alike[int(rng.integers(len(alike)))]


class DenoiserStage:
    name = "denoiser"

    def __init__(self, pipe: WanPipeline, config: TrainConfig, data: RunData) -> None:
        self.pipe, self.config, self.data = pipe, config, data
        self.total = config.steps
        self.transformer = pipe.transformer.train()
        self.device = data.device
        self.bank = CaptionBank(pipe, config.captions_per_scene, seed=config.seed + 6, device=data.device)
        self.scenes = [s.scene for s in training_samples(config.latent_clips, seed=config.seed + 1)]
        self.optimizer = torch.optim.AdamW(self.transformer.parameters(), lr=config.lr, weight_decay=0.01)
        self.schedule = warmup_cosine(self.optimizer, config.warmup_steps, config.steps)
        self.average = AveragedModel(self.transformer, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        self.rng = np.random.default_rng(config.seed + 2)
        self.generator = torch.Generator().manual_seed(config.seed + 3)
        self.losses: list[float] = []

    def step(self, index: int) -> float:
        config, latents = self.config, self.data.latents
        rows = self.rng.integers(len(latents), size=config.batch)
        x0 = latents[torch.from_numpy(rows).to(self.device)].float()
        given = self.rng.random(config.batch) < config.first_frame_share  # image-to-video rows
        keys = [self._caption_key(self.scenes[r], first_frame) for r, first_frame in zip(rows, given, strict=True)]
        picks = [self.bank.pick(self.rng, key, config.caption_dropout) for key in keys]
        context = self.bank.embeddings[torch.tensor(picks, device=self.device)].float()
        loss = self._loss(x0, context, torch.from_numpy(given).to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.transformer.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.average.update_parameters(self.transformer)
        self.losses.append(loss.item())
        return self.losses[-1]

    def _caption_key(self, scene: Scene, first_frame: bool) -> SceneKey:
        key = (scene.shape, scene.color, scene.motion, scene.background)
        if first_frame and self.rng.random() < self.config.first_frame_caption_swap:
            return self.bank.swapped(self.rng, key)
        return key

    def _loss(self, x0: torch.Tensor, context: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
        config, g = self.config, self.generator
        batch, _, frames, height, width = x0.shape
        uniform = torch.rand(batch, generator=g).to(x0.device)
        # Uniform, then shifted as the sampler's schedule is: training visits each noise level as
        # often as sampling does, the high-noise steps where colour and place are decided included.
        sigma = config.noise_shift * uniform / (1 + (config.noise_shift - 1) * uniform)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        frame0 = torch.zeros(1, 1, frames, 1, 1, dtype=torch.bool, device=x0.device)
        frame0[:, :, 0] = True
        clean = given.view(-1, 1, 1, 1, 1) & frame0
        noisy = torch.where(clean, x0, noisy)
        per_frame = (height // 2) * (width // 2)  # tokens of one latent frame, (1, 2, 2) patches
        timestep = (sigma * 1000).view(-1, 1).repeat(1, frames * per_frame)
        timestep[given, :per_frame] = 0.0
        velocity = self.transformer(noisy, timestep, context, return_dict=False)[0]
        weight = (~clean).float()  # (B, 1, F, 1, 1): no loss on a given first frame
        error = velocity - (noise - x0)
        loss = (weight * error**2).sum() / (weight.sum() * error[0, :, 0].numel())
        if config.temporal_weight:
            # Frame-to-frame differences of the error: a fixed reweighting (the optimum is unchanged)
            # that puts gradient on the part of the signal that carries motion.
            pair = weight[:, :, 1:] * weight[:, :, :-1]
            moved = (pair * error.diff(dim=2) ** 2).sum() / (pair.sum() * error[0, :, 0].numel()).clamp_min(1)
            loss = loss + config.temporal_weight * moved
        return loss

    def state_dict(self) -> dict[str, Any]:
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_trainer(self, state)

    @contextmanager
    def shipped(self) -> Iterator[None]:
        """The pipeline holding the averaged weights (what ships), then the live ones again."""
        live = self.pipe.transformer
        self.pipe.transformer = self.average.module.eval()
        try:
            yield
        finally:
            self.pipe.transformer = live

    def finish(self) -> dict[str, Any]:
        self.pipe.transformer = self.average.module.eval()
        tail = self.losses[-100:]
        return {"denoiser_steps_done": len(self.losses),
                "denoiser_loss": round(sum(tail) / len(tail), 5) if tail else None}
