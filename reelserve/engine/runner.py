"""Runs one batch of a video model through the engine's own denoising loop. Blocking: call it off
the event loop.

The loop (``reelserve.engine.denoise_loop``) steps the rows through the model's family
(``reelserve.models.wan_family``), so every row carries its own seeded latents and scheduler and a
video is the same whether it ran alone or in a batch. A row whose job is cancelled leaves the
batch at the next step boundary; its batch-mates carry on untouched.

A batch that runs out of device memory is split in halves, each run on its own, down to single
rows; a row that does not fit even alone fails with ``out_of_memory`` and the others complete.

Continuous batching: with a ``JoinQueue`` (``engine/joining.py``), jobs the loop claimed for a
running batch join it at the next step boundary, each at its own step 0 and in the same transformer
calls as the rows already running (``mixed_steps``); with ``on_finished`` each row's video is handed
out as soon as the row is decoded, not when the batch ends. A step cache keeps per-step state for the
rows it was primed with, so an accelerated runner with one takes no joiners (``joins_rows``).

Prompts are encoded one at a time by ``encode_prompts``, through the text-embedding cache when
there is one.
"""

from __future__ import annotations

import gc
import time
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reelserve.accel.accelerate import Accelerated
from reelserve.engine.cost_model import CallTiming
from reelserve.engine.denoise_loop import Boundary, denoise
from reelserve.engine.joining import JoinQueue
from reelserve.engine.live_previews import LivePreviews, OnPreview, PreviewMaps
from reelserve.engine.outcome import BatchOutcome
from reelserve.engine.row_inputs import RowInputs
from reelserve.engine.text_embeddings import TextEmbeddingCache, encode_prompts
from reelserve.models.family import ModelFamily
from reelserve.models.family import Row as FamilyRow
from reelserve.models.lora import LoraBank
from reelserve.models.wan_family import WanFamily
from reelserve.parallel.family import ParallelWanFamily
from reelserve.parallel.ranks import ParallelRanks
from reelserve.schemas import ErrorCode, GenerationParams, JobError

StepListener = Callable[[list[str], int, int], None]  # (live job ids, step done, total steps)
StopCheck = Callable[[str], bool]  # should this job stop now?
FinishedRow = Callable[[str, np.ndarray], None]  # (job id, its frames), on the running thread
Row = tuple[str, GenerationParams]

# What allocators say when they give up: CUDA/MPS ("... out of memory"), the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory") and the OS error text it quotes.
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is a device or host allocator giving up (so a smaller batch may fit)."""
    # MemoryError: numpy's "Unable to allocate ..." when a decoded batch does not fit in host memory.
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return any(text in message for text in _OUT_OF_MEMORY_MESSAGES)


@dataclass
class _Run:
    """One ``run()``: its outcome so far and the caller's hooks, shared by the calls it splits into."""

    outcome: BatchOutcome
    on_step: StepListener | None
    should_stop: StopCheck | None
    joins: JoinQueue | None = None
    on_finished: FinishedRow | None = None
    resume: Callable[[str], FamilyRow | None] | None = None
    checkpoint: Callable[[list[FamilyRow]], None] | None = None
    on_preview: OnPreview | None = None
    on_parked: Callable[[str, FamilyRow], None] | None = None
    resumed: dict[str, FamilyRow] = field(default_factory=dict)  # what ``resume`` gave, for a retry after a split
    ran_out_of_memory: bool = False


class PipelineRunner:
    """Runs a batch of ``(job_id, params)`` sharing one batch key through a model family: by default
    the Wan family over ``pipeline``'s modules."""

    def __init__(
        self,
        pipeline: Any,
        device: torch.device,
        max_sequence_length: int,
        text_embeddings: TextEmbeddingCache | None = None,
        accelerated: Accelerated | None = None,
        family: ModelFamily | None = None,
        cpu_threads: int | None = None,
        previews: PreviewMaps | None = None,
        inputs: RowInputs | None = None,
        adapters: LoraBank | None = None,
        ranks: ParallelRanks | None = None,
    ) -> None:
        self.pipeline = pipeline
        # Rows' first frames and clips to re-draw, read from storage; None: text rows only.
        self.inputs = inputs
        # Torch keeps its thread count per OS thread: set on the thread that runs, at every call.
        self.cpu_threads = cpu_threads
        self.device = device
        self.max_sequence_length = max_sequence_length
        self.text_embeddings = text_embeddings
        self.accelerated = accelerated
        # The Wan family for every model reelserve loads; another family is passed in. Tests wrap
        # it (a gate, injected out-of-memory errors) to hold or break a batch.
        # On a parallel worker (``ranks``: its process group) each evaluation and decode is shared out.
        self.family: ModelFamily = family or (
            WanFamily(pipeline, max_sequence_length, encode=self._encode, adapters=adapters) if ranks is None
            else ParallelWanFamily(pipeline, max_sequence_length, ranks, encode=self._encode, adapters=adapters))
        # The model's latent-to-RGB map for live previews (shared by its lanes: ``model_host``).
        self.previews = previews or PreviewMaps(pipeline)
        self.calls = 0  # runs of the loop (one per batch, more after a split), for tests and benchmarks

    def shutdown(self) -> None:
        """Nothing to release: it runs on its caller's thread (``PipelineLanes`` has threads of its own)."""

    @property
    def joins_rows(self) -> bool:
        """Whether a running batch can take joiners: not with a step cache (its state is per step)."""
        return self.accelerated is None or self.accelerated.step_cache is None

    def run(
        self,
        batch: Sequence[Row],
        on_step: StepListener | None = None,
        should_stop: StopCheck | None = None,
        joins: JoinQueue | None = None,
        on_finished: FinishedRow | None = None,
        resume: Callable[[str], FamilyRow | None] | None = None,
        checkpoint: Callable[[list[FamilyRow]], None] | None = None,
        on_preview: OnPreview | None = None,
        on_parked: Callable[[str, FamilyRow], None] | None = None,
    ) -> BatchOutcome:
        """Videos for the rows of ``batch`` (and of those that join it through ``joins``) that neither
        stopped nor ran out of memory alone: in the outcome's ``frames``, or given to ``on_finished``
        as each row finishes (then listed in ``finished``).

        Progress restarts at step 1 for each call after a split. Exceptions other than running out
        of memory propagate unchanged: the whole batch failed, joiners included. ``joins`` is closed
        when this returns; rows it parked (``JoinQueue.park_all``) are in the outcome's ``parked``.
        ``resume``: a parked row by job id (None: the row starts anew), asked once for every row of
        ``batch`` and every joiner; a parked row goes on from its own step. ``checkpoint`` sees the
        running rows at every step boundary (``Boundary.checkpoint``). ``on_preview`` gets each live
        preview a row asks for (``GenerationParams.preview_every``); ``on_parked`` each row swapped out
        of the batch (``JoinQueue.swap``) while it goes on, at once (rows parked as the batch makes way
        are in the outcome's ``parked``).
        """
        if self.cpu_threads is not None and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        first = batch[0][1]
        # Rows at their own steps share calls unless a step cache runs: then a batch is one schedule.
        key = GenerationParams.shape_key if self.joins_rows else GenerationParams.batch_key
        assert all(key(p) == key(first) for _, p in batch), "rows of different shapes or schedules"
        started = time.perf_counter()
        state = _Run(BatchOutcome(), on_step, should_stop, joins if self.joins_rows else None, on_finished, resume,
                     checkpoint, on_preview, on_parked)
        try:
            self._run_splitting(list(batch), state)
        finally:
            if joins is not None:  # rows still waiting: the batch made way (or failed, and they fail with it)
                state.outcome.unstarted += [key for key, _ in joins.close()]
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
        if state.joins is not None:  # no joiners while the batch is being split; the waiting ones run in it
            rows += state.joins.close()
            state.joins = None
        rows = [row for row in rows if row[0] not in outcome.finished]  # handed out before the failure
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
        """One run of the loop for ``rows``, which grows by the rows that join; records its videos,
        stops and timing in ``state``."""
        step_times: list[float] = []
        outcome = state.outcome
        started_with, finished = len(rows), []

        def on_step(keys: list[str], step: int, total: int) -> None:
            step_times.append(time.perf_counter())
            if state.on_step is not None:
                state.on_step(keys, step, total)

        def on_finished(key: str, frames: np.ndarray) -> None:
            finished.append(key)
            if state.on_finished is None:
                outcome.frames[key] = frames
            else:
                outcome.finished.add(key)
                state.on_finished(key, frames)

        started = time.perf_counter()
        self.calls += 1
        boundary = None
        if state.joins is not None:
            on_parked = None if state.on_parked is None else (lambda row, hand=state.on_parked: hand(row.key, row))
            boundary = Boundary(self._admitter(rows, state), self._parker(state.joins), checkpoint=state.checkpoint,
                                swap_out=lambda _, joins=state.joins: joins.take_leaving(), on_swapped_out=on_parked)
        elif state.checkpoint is not None:
            boundary = Boundary(checkpoint=state.checkpoint)
        previews = None if state.on_preview is None else LivePreviews(self.family, self.previews, state.on_preview)
        kept = None if self.inputs is None or not self.inputs.keep_latents else partial(self.inputs.finished, self.family)
        after_step = _each(previews, kept)
        with torch.inference_mode():
            prepared = self._prepare(rows, state)
            try:
                denoise(self.family, prepared, state.should_stop, on_step, self._primer(len(prepared[0].timesteps)),
                        outcome.stopped_at, boundary=boundary, mixed_steps=self.joins_rows, on_finished=on_finished,
                        after_step=after_step)
            finally:
                if boundary is not None:
                    outcome.parked.update(boundary.parked)
        if not finished:
            return  # every row stopped: no videos and no decode, so neither a timing nor proof that this size fits
        # A batch that changed size, or whose rows ran part of their steps, is no sample of one size's cost.
        if len(rows) == started_with and not outcome.parked and not state.resumed:
            outcome.calls.append(_call_timing(len(rows), step_times, time.perf_counter() - started))
        if state.ran_out_of_memory:
            outcome.fit_batch_size = max(outcome.fit_batch_size or 0, len(rows))

    def _prepare(self, rows: list[Row], state: _Run) -> list[FamilyRow]:
        """Rows for the loop: parked ones as they were (each at its own step), the others new."""
        if state.resume is not None:
            for key, _ in rows:
                if key not in state.resumed and (row := state.resume(key)) is not None:
                    state.resumed[key] = row
        new = [row for row in rows if row[0] not in state.resumed]
        fresh = iter(self._fresh(new) if new else [])
        return [state.resumed[key] if key in state.resumed else next(fresh) for key, _ in rows]

    def _fresh(self, rows: list[Row]) -> list[FamilyRow]:
        """New rows from their seeds, and from their inputs where they have any."""
        with_inputs = [row for row in rows if row[1].input_reference is not None or row[1].source is not None]
        if not with_inputs:
            return self.family.prepare_rows(rows)
        if self.inputs is None:
            raise ValueError("rows with a first frame or a clip to re-draw need the runner's inputs (storage)")
        return self.family.prepare_rows(rows, self.inputs.starts(self.family, with_inputs))

    @staticmethod
    def _parker(joins: JoinQueue) -> Callable[[list[FamilyRow]], list[str]]:
        """``Boundary.park``: every running row once the loop asked the batch to make way."""
        return lambda live: [row.key for row in live] if joins.parking else []

    def _admitter(self, rows: list[Row], state: _Run) -> Callable[[list[FamilyRow]], list[FamilyRow]]:
        """``Boundary.admit`` for ``state.joins``: the waiting rows, prepared, appended to ``rows``; a row
        cancelled while it waited stops at step 0 without running."""
        joins = state.joins
        assert joins is not None

        def admit(live: list[FamilyRow]) -> list[FamilyRow]:
            while True:
                offered = joins.take(len(live))
                cancelled = {key for key, _ in offered if state.should_stop is not None and state.should_stop(key)}
                state.outcome.stopped_at.update((key, 0) for key in cancelled)
                kept = [row for row in offered if row[0] not in cancelled]
                if kept or not offered:
                    break
            rows.extend(kept)
            return self._prepare(kept, state) if kept else []

        return admit

    def _primer(self, steps: int) -> Callable[[list[FamilyRow]], None]:
        """Primes the accelerations for the rows about to be evaluated: the whole batch first, and
        again whenever rows have left (a step cache's residuals and the CFG wrapper's negatives are
        for the rows they were made with)."""
        primed = False

        def prime(group: list[FamilyRow]) -> None:
            nonlocal primed
            if self.accelerated is None:
                return
            negatives = [row.negative_embeds for row in group]
            negative = None if any(n is None for n in negatives) else torch.cat(negatives)  # type: ignore[arg-type]
            if primed:
                self.accelerated.rows_dropped(negative)
            else:
                self.accelerated.before_call(steps, negative)
                primed = True

        return prime

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return encode_prompts(self.pipeline, prompts, self.max_sequence_length, self.text_embeddings)


def _each(*hooks: Callable[[list[FamilyRow]], None] | None) -> Callable[[list[FamilyRow]], None] | None:
    """One ``after_step`` hook that calls every given one in turn (None when none is given)."""
    given = [hook for hook in hooks if hook is not None]
    if not given:
        return None
    if len(given) == 1:
        return given[0]

    def each(group: list[FamilyRow]) -> None:
        for hook in given:
            hook(group)

    return each


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
