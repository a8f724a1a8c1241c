"""Runs one batch through a diffusers video pipeline. Blocking: call it off the event loop.

Every row gets its own seeded generator, so a video is the same whether it ran alone or in a
batch. A row whose job is cancelled is cut out of the batch at the next step boundary: its
latents, text embeddings and any per-sample scheduler state are sliced away, and its batch-mates
carry on untouched.

Pipelines with ``encode_prompt`` (every Wan pipeline) get ``prompt_embeds`` made one prompt at a
time by ``encode_prompts``, through the text-embedding cache when there is one; others get the
prompt strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reelserve.engine.text_embeddings import TextEmbeddingCache, encode_prompts
from reelserve.schemas import GenerationParams

StepListener = Callable[[list[str], int, int], None]  # (live job ids, step done, total steps)
StopCheck = Callable[[str], bool]  # should this job stop now?

_ROW_TENSORS = ("latents", "prompt_embeds", "negative_prompt_embeds")


@dataclass
class BatchOutcome:
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # job id -> (F, H, W, 3) in [0, 1]
    stopped_at: dict[str, int] = field(default_factory=dict)  # job id -> steps it ran before stopping
    inference_s: float = 0.0


class _AllRowsStopped(Exception):
    pass


class PipelineRunner:
    """Calls ``pipeline`` for a batch of ``(job_id, params)`` sharing one batch key."""

    def __init__(
        self,
        pipeline: Any,
        device: torch.device,
        max_sequence_length: int,
        text_embeddings: TextEmbeddingCache | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.device = device
        self.max_sequence_length = max_sequence_length
        self.text_embeddings = text_embeddings
        self.calls = 0  # pipeline invocations, for tests and benchmarks

    def run(
        self,
        batch: Sequence[tuple[str, GenerationParams]],
        on_step: StepListener | None = None,
        should_stop: StopCheck | None = None,
    ) -> BatchOutcome:
        ids = [job_id for job_id, _ in batch]
        first = batch[0][1]
        assert all(p.batch_key() == first.batch_key() for _, p in batch), "mixed batch keys"
        live = list(ids)
        outcome = BatchOutcome()
        started = time.perf_counter()

        def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            step = i + 1
            if on_step is not None:
                on_step(list(live), step, first.num_inference_steps)
            if should_stop is None:
                return {}
            keep = [r for r, job_id in enumerate(live) if not should_stop(job_id)]
            if len(keep) == len(live):
                return {}
            for r, job_id in enumerate(live):
                if r not in keep:
                    outcome.stopped_at[job_id] = step
            if not keep:
                raise _AllRowsStopped
            sliced = _drop_rows(pipe, tensors, keep)
            live[:] = [live[r] for r in keep]
            return sliced

        kwargs: dict[str, Any] = {
            "height": first.height,
            "width": first.width,
            "num_frames": first.num_frames,
            "num_inference_steps": first.num_inference_steps,
            "guidance_scale": first.guidance_scale,
            "generator": [torch.Generator(device=self.device).manual_seed(p.seed) for _, p in batch],
            "output_type": "np",
            "max_sequence_length": self.max_sequence_length,
            "callback_on_step_end": step_end,
            "callback_on_step_end_tensor_inputs": list(_ROW_TENSORS),
        }
        if first.guidance_scale_2 is not None:
            kwargs["guidance_scale_2"] = first.guidance_scale_2
        self.calls += 1
        try:
            with torch.inference_mode():
                kwargs.update(self._text_inputs([p for _, p in batch]))
                frames = self.pipeline(**kwargs).frames
        except _AllRowsStopped:
            frames = []
        outcome.inference_s = time.perf_counter() - started
        for job_id, video in zip(live, frames, strict=False):
            outcome.frames[job_id] = np.asarray(video)
        return outcome

    def _text_inputs(self, params: list[GenerationParams]) -> dict[str, Any]:
        prompts = [p.prompt for p in params]
        negatives = [p.negative_prompt for p in params]
        # Looked up per call, not in __init__: tests swap runner.pipeline for a wrapper.
        if not hasattr(self.pipeline, "encode_prompt"):
            return {"prompt": prompts, "negative_prompt": negatives}
        inputs = {"prompt_embeds": self._encode(prompts)}
        # WanPipeline runs the unconditional branch only when guidance_scale > 1 (guidance_scale_2
        # does not enter into it); without it the negative embeddings would be encoded for nothing.
        if params[0].guidance_scale > 1.0:
            inputs["negative_prompt_embeds"] = self._encode(negatives)
        return inputs

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return encode_prompts(self.pipeline, prompts, self.max_sequence_length, self.text_embeddings)


def _drop_rows(pipe: Any, tensors: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """Slice the batch down to rows ``keep``: the pipeline's loop tensors and the scheduler's
    per-sample history (multistep schedulers such as UniPC keep past model outputs)."""
    latents = tensors["latents"]
    index = torch.tensor(keep, device=latents.device)
    sliced = {name: t.index_select(0, index) for name, t in tensors.items() if t is not None}
    scheduler = pipe.scheduler
    for name, value in vars(scheduler).items():
        if torch.is_tensor(value) and value.shape == latents.shape:
            setattr(scheduler, name, value.index_select(0, index.to(value.device)))
        elif isinstance(value, list) and any(torch.is_tensor(v) and v.shape == latents.shape for v in value):
            setattr(
                scheduler,
                name,
                [
                    v.index_select(0, index.to(v.device)) if torch.is_tensor(v) and v.shape == latents.shape else v
                    for v in value
                ],
            )
    return sliced
