"""Few-step distillation of the micro model into a LoRA adapter: rectified-flow "reflow" with the
guidance baked in (Liu et al. 2022, as InstaFlow distils Stable Diffusion).

1. **Teacher pairs** (``teacher_pairs``): the base model, as served (``TEACHER_STEPS`` steps, guidance
   ``TEACHER_GUIDANCE``), samples training captions from seeded noise; each (noise, caption, sample)
   is kept in latent space.
2. **Reflow** (``DistillStage``): the adapter learns the straight path from each noise to its sample:
   at σ, ``x = (1 - σ)·sample + σ·noise`` and the target velocity is ``noise - sample``, conditioned
   on the caption alone. A straight path is followed exactly by few large steps, and without guidance
   (the teacher's guidance is in the samples), so the adapter runs ``STUDENT_STEPS`` unguided steps:
   ``STUDENT_STEPS`` transformer calls where the teacher makes ``2 × TEACHER_STEPS``.

Half of each batch is trained at the σ the student's own schedule visits (``STUDENT_STEPS`` at
``STUDENT_SHIFT``), half at σ drawn as the base model was trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import WanPipeline
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from reelserve.micro.architecture import FLOW_SHIFT, MAX_SEQUENCE_LENGTH
from reelserve.micro.denoiser_stage import CaptionBank
from reelserve.micro.stage import restore_trainer, trainer_state, warmup_cosine
from reelserve.micro.world import FRAMES, SIZE

TEACHER_STEPS, TEACHER_GUIDANCE = 25, 5.0  # the micro model's serving defaults
STUDENT_STEPS, STUDENT_SHIFT = 4, 3.0
TEACHER_BATCH = 32


@dataclass
class TeacherPairs:
    noise: torch.Tensor  # (N, C, F, h, w) float32: each sample's starting noise
    samples: torch.Tensor  # (N, C, F, h, w) float32: the teacher's final latents (normalised space)
    captions: torch.Tensor  # (N,) int64: rows of the caption bank's embeddings


def student_sigmas() -> torch.Tensor:
    """The σ at which the student's sampler calls the model (the scheduler's own schedule)."""
    from reelserve.micro.architecture import build_scheduler

    scheduler = build_scheduler()
    scheduler = type(scheduler).from_config({**scheduler.config, "flow_shift": STUDENT_SHIFT})
    scheduler.set_timesteps(STUDENT_STEPS)
    return scheduler.sigmas[:-1].float()


@torch.no_grad()
def teacher_pairs(pipe: WanPipeline, bank: CaptionBank, count: int, seed: int, chunks: list[torch.Tensor],
                  made: Callable[[int, int], None]) -> TeacherPairs:
    """``count`` teacher samples of random training captions (never the empty one), each from its own
    seeded noise, in batches appended to ``chunks`` from its length on (a stopped run's batches are
    kept); ``made(done, total)`` after each batch."""
    rng = np.random.default_rng(seed)
    captions = torch.tensor([bank.pick(rng, bank.keys[int(rng.integers(len(bank.keys)))], 0.0) for _ in range(count)])
    generator = torch.Generator().manual_seed(seed)
    latent_frames = (FRAMES - 1) // pipe.vae_scale_factor_temporal + 1
    latent_size = SIZE // pipe.vae_scale_factor_spatial
    shape = (count, pipe.transformer.config.in_channels, latent_frames, latent_size, latent_size)
    noise = torch.randn(shape, generator=generator)
    empty = bank.embeddings[bank.empty : bank.empty + 1].float()
    total = -(-count // TEACHER_BATCH)
    for index in range(len(chunks), total):
        rows = slice(index * TEACHER_BATCH, (index + 1) * TEACHER_BATCH)
        embeds = bank.embeddings[captions[rows]].float()
        chunks.append(pipe(prompt_embeds=embeds, negative_prompt_embeds=empty.expand(len(embeds), -1, -1),
                           height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=TEACHER_STEPS,
                           guidance_scale=TEACHER_GUIDANCE, latents=noise[rows].clone(), output_type="latent",
                           max_sequence_length=MAX_SEQUENCE_LENGTH).frames.float())
        made(index + 1, total)
    return TeacherPairs(noise, torch.cat(chunks), captions)


class DistillStage:
    """Reflow of the teacher pairs into the adapter's weights (the transformer's other weights frozen)."""

    name = "distill"

    def __init__(self, pipe: WanPipeline, bank: CaptionBank, pairs: TeacherPairs, steps: int, batch: int, lr: float,
                 warmup: int, ema_decay: float, seed: int) -> None:
        self.pipe, self.bank, self.pairs, self.batch = pipe, bank, pairs, batch
        self.total = steps
        self.transformer = pipe.transformer.train()
        trained = [p for p in self.transformer.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
        self.schedule = warmup_cosine(self.optimizer, warmup, steps)
        self.average = AveragedModel(self.transformer, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        self.rng = np.random.default_rng(seed + 2)
        self.generator = torch.Generator().manual_seed(seed + 3)
        self.visited = student_sigmas()
        self.losses: list[float] = []

    def step(self, index: int) -> float:
        rows = torch.from_numpy(self.rng.integers(len(self.pairs.samples), size=self.batch))
        sample, noise = self.pairs.samples[rows], self.pairs.noise[rows]
        context = self.bank.embeddings[self.pairs.captions[rows]].float()
        sigma = self._sigmas()
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * sample + s * noise
        frames, height, width = sample.shape[2:]
        timestep = (sigma * 1000).view(-1, 1).repeat(1, frames * (height // 2) * (width // 2))  # every token's
        velocity = self.transformer(noisy, timestep, context, return_dict=False)[0]
        loss = ((velocity - (noise - sample)) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.average.update_parameters(self.transformer)
        self.losses.append(loss.item())
        return self.losses[-1]

    def _sigmas(self) -> torch.Tensor:
        """Half the rows at the student's own σ, half as the base model was trained (shifted uniform)."""
        visited = self.visited[torch.randint(len(self.visited), (self.batch,), generator=self.generator)]
        uniform = torch.rand(self.batch, generator=self.generator)
        drawn = FLOW_SHIFT * uniform / (1 + (FLOW_SHIFT - 1) * uniform)
        return torch.where(torch.arange(self.batch) % 2 == 0, visited, drawn)

    def state_dict(self) -> dict[str, Any]:
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_trainer(self, state)

    def finish(self) -> dict[str, Any]:
        self.pipe.transformer = self.average.module.eval()
        tail = self.losses[-100:]
        return {"steps_done": len(self.losses), "loss": round(sum(tail) / len(tail), 5) if tail else None}
