"""Runs one batch through a diffusers video pipeline. Blocking: call it off the event loop.

Every row gets its own seeded generator, so a video is the same whether it ran alone or in a
batch. A row whose job is cancelled is cut out of the batch at the next step boundary: its
latents, text embeddings and any per-sample scheduler state are sliced away, and its batch-mates
carry on untouched.

A batch that runs out of device memory is split in halves, each run on its own, down to single
rows; a row that does not fit even alone fails with ``out_of_memory`` and the others complete.

Pipelines with ``encode_prompt`` (every Wan pipeline) get ``prompt_embeds`` made one prompt at a
time by ``encode_prompts``, through the text-embedding cache when there is one; others get the
prompt strings.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reelserve.accel.accelerate import Accelerated
from reelserve.engine.cost_model import CallTiming
from reelserve.engine.text_embeddings import TextEmbeddingCache, encode_prompts
from reelserve.schemas import ErrorCode, GenerationParams, JobError

StepListener = Callable[[list[str], int, int], None]  # (live job ids, step done, total steps)
StopCheck = Callable[[str], bool]  # should this job stop now?
Row = tuple[str, GenerationParams]

_ROW_TENSORS = ("latents", "prompt_embeds", "negative_prompt_embeds")

# What allocators say when they give up: CUDA/MPS ("... out of memory"), the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory") and the OS error text it quotes.
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass
class BatchOutcome:
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # job id -> (F, H, W, 3) in [0, 1]
    stopped_at: dict[str, int] = field(default_factory=dict)  # job id -> steps it ran before stopping
    errors: dict[str, JobError] = field(default_factory=dict)  # job id -> why it failed (rows that did not fit)
    # After an out-of-memory: the largest batch that then ran through. None without an OOM, or when
    # nothing fit. The engine lowers its learned maximum batch size for this batch key to it.
    fit_batch_size: int | None = None
    calls: list[CallTiming] = field(default_factory=list)  # one per pipeline call that returned videos
    inference_s: float = 0.0  # wall time of the whole run, retries included


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is a device or host allocator giving up (so a smaller batch may fit)."""
    # MemoryError: numpy's "Unable to allocate ..." when a decoded batch does not fit in host memory.
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return any(text in message for text in _OUT_OF_MEMORY_MESSAGES)


class _AllRowsStopped(Exception):
    pass


@dataclass
class _Run:
    """One ``run()``: its outcome so far and the caller's hooks, shared by the calls it splits into."""

    outcome: BatchOutcome
    on_step: StepListener | None
    should_stop: StopCheck | None
    ran_out_of_memory: bool = False


class PipelineRunner:
    """Calls ``pipeline`` for a batch of ``(job_id, params)`` sharing one batch key."""

    def __init__(
        self,
        pipeline: Any,
        device: torch.device,
        max_sequence_length: int,
        text_embeddings: TextEmbeddingCache | None = None,
        accelerated: Accelerated | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.device = device
        self.max_sequence_length = max_sequence_length
        self.text_embeddings = text_embeddings
        self.accelerated = accelerated
        self.calls = 0  # pipeline invocations, for tests and benchmarks

    def run(
        self,
        batch: Sequence[Row],
        on_step: StepListener | None = None,
        should_stop: StopCheck | None = None,
    ) -> BatchOutcome:
        """Videos for the rows of ``batch`` that neither stopped nor ran out of memory alone.

        Progress restarts at step 1 for each call after a split. Exceptions other than running out
        of memory propagate unchanged: the whole batch failed.
        """
        first = batch[0][1]
        assert all(p.batch_key() == first.batch_key() for _, p in batch), "mixed batch keys"
        started = time.perf_counter()
        state = _Run(BatchOutcome(), on_step, should_stop)
        self._run_splitting(list(batch), state)
        state.outcome.inference_s = time.perf_counter() - started
        return state.outcome

    def _run_splitting(self, rows: list[Row], state: _Run) -> None:
        try:
            self._call(rows, state)
            return
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            message = f"{type(exc).__name__}: {exc}"
        # Freed here, outside the except block: until it ends, the traceback's frames keep the
        # failed call's tensors alive.
        self._free_memory()
        state.ran_out_of_memory = True
        outcome = state.outcome
        if len(rows) == 1:
            job_id = rows[0][0]
            if job_id not in outcome.stopped_at:
                outcome.errors[job_id] = JobError(
                    code=ErrorCode.out_of_memory,
                    message=f"the video does not fit in device memory even alone ({message})",
                )
            return
        half = (len(rows) + 1) // 2
        for part in (rows[:half], rows[half:]):
            remaining = [row for row in part if not self._stopped_before_retry(row[0], state)]
            if remaining:
                self._run_splitting(remaining, state)

    @staticmethod
    def _stopped_before_retry(job_id: str, state: _Run) -> bool:
        """A cancelled row is not run again: it stopped in the failed call, or was cancelled since."""
        if job_id in state.outcome.stopped_at:
            return True
        if state.should_stop is not None and state.should_stop(job_id):
            state.outcome.stopped_at[job_id] = 0  # its steps so far were lost with the failed call
            return True
        return False

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _call(self, rows: list[Row], state: _Run) -> None:
        """One pipeline call for ``rows``; records its videos, stops and timing in ``state``."""
        first = rows[0][1]
        live = [job_id for job_id, _ in rows]
        step_times: list[float] = []
        outcome = state.outcome

        def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            step_times.append(time.perf_counter())
            step = i + 1
            if state.on_step is not None:
                state.on_step(list(live), step, first.num_inference_steps)
            if state.should_stop is None:
                return {}
            keep = [r for r, job_id in enumerate(live) if not state.should_stop(job_id)]
            if len(keep) == len(live):
                return {}
            for r, job_id in enumerate(live):
                if r not in keep:
                    outcome.stopped_at[job_id] = step
            if not keep:
                raise _AllRowsStopped
            sliced = _drop_rows(pipe, tensors, keep)
            live[:] = [live[r] for r in keep]
            if self.accelerated is not None:
                self.accelerated.rows_dropped(sliced.get("negative_prompt_embeds"))
            return sliced

        started = time.perf_counter()
        self.calls += 1
        try:
            with torch.inference_mode():
                kwargs = self._call_kwargs(rows, step_end)
                if self.accelerated is not None:
                    self.accelerated.before_call(first.num_inference_steps, kwargs.get("negative_prompt_embeds"))
                frames = self.pipeline(**kwargs).frames
        except _AllRowsStopped:
            return  # no videos and no decode: neither a timing nor proof that this batch size fits
        total_s = time.perf_counter() - started
        for job_id, video in zip(live, frames, strict=False):
            outcome.frames[job_id] = np.asarray(video)
        outcome.calls.append(_call_timing(len(rows), step_times, total_s))
        if state.ran_out_of_memory:
            outcome.fit_batch_size = max(outcome.fit_batch_size or 0, len(rows))

    def _call_kwargs(self, rows: list[Row], step_end: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        first = rows[0][1]
        kwargs: dict[str, Any] = {
            "height": first.height,
            "width": first.width,
            "num_frames": first.num_frames,
            "num_inference_steps": first.num_inference_steps,
            "guidance_scale": first.guidance_scale,
            # Fresh per call: a retried row starts from its seed again, as if it had run alone.
            "generator": [torch.Generator(device=self.device).manual_seed(p.seed) for _, p in rows],
            "output_type": "np",
            "max_sequence_length": self.max_sequence_length,
            "callback_on_step_end": step_end,
            "callback_on_step_end_tensor_inputs": list(_ROW_TENSORS),
        }
        if first.guidance_scale_2 is not None:
            kwargs["guidance_scale_2"] = first.guidance_scale_2
        kwargs.update(self._text_inputs([p for _, p in rows]))
        return kwargs

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


def _call_timing(batch_size: int, step_times: list[float], total_s: float) -> CallTiming:
    """Split a call's time into denoising steps and the rest, from its step-callback timestamps.

    The gap between consecutive callbacks is one step; the first step's start is not observed, so
    the mean over the gaps stands for every step. ``batch_size`` is the rows the call started with.
    """
    steps = len(step_times)
    if steps < 2:
        return CallTiming(batch_size=batch_size, steps=steps, step_s=None, overhead_s=total_s, total_s=total_s)
    step_s = (step_times[-1] - step_times[0]) / (steps - 1)
    overhead_s = max(0.0, total_s - steps * step_s)
    return CallTiming(batch_size=batch_size, steps=steps, step_s=step_s, overhead_s=overhead_s, total_s=total_s)


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
