"""Reusing transformer work across denoising steps: diffusers' cache hooks, made accountable.

Four kinds, each with one knob (``threshold``):

- ``fbcache`` (First-Block Cache): when the first block's residual barely changed since the last
  step, the other blocks are skipped and their last residual reused. Knob: the relative-change
  threshold.
- ``magcache``: skips whole steps while the accumulated error predicted from calibrated residual
  magnitude ratios stays under the threshold. The ratios are measured on the loaded model at
  load time (``calibrate_mag_ratios``), not copied from another model.
- ``taylorseer``: full computation every ``threshold`` steps, Taylor-extrapolated outputs between.
- ``pab`` (Pyramid Attention Broadcast): self-attention is recomputed every ``threshold`` calls
  inside the middle of the schedule and broadcast in between.

``SkipCounter`` counts the block computations that really ran, so a cache that skips nothing shows
up as 0 % in the quality report instead of passing as a speed-up.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import (
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)

from reelserve.accel.options import StepCacheKind
# Re-exported: the knobs live in a module without torch, and are read here and from here.
from reelserve.accel.thresholds import CALIBRATED_THRESHOLDS, DEFAULT_THRESHOLDS, threshold_for  # noqa: F401

# The first 10 % of steps are never skipped (they set the layout), and at most 6 steps in a row are.
# Measured against the paper's 20 % / 3 on micro (docs/accelerations.md): at 20 steps it skips 70 %
# of passes instead of 60 % for 0.8 points less mean adherence.
MAG_CACHE_RETENTION = 0.1
MAG_CACHE_MAX_SKIP = 6
# diffusers' default TaylorSeer patterns end in "attn" and fullmatch nothing in a Wan transformer
# (its modules are attn1/attn2): left to its defaults, the cache is a silent no-op on Wan.
WAN_TAYLORSEER_MODULES = (r"^blocks\.\d+\.attn1$", r"^blocks\.\d+\.attn2$", r"^blocks\.\d+\.ffn$")


def _config(kind: StepCacheKind, threshold: float, pipeline: Any, steps: int, mag_ratios: list[float] | None) -> Any:
    if kind == "fbcache":
        return FirstBlockCacheConfig(threshold=threshold)
    if kind == "magcache":
        return MagCacheConfig(
            threshold=threshold, num_inference_steps=steps, mag_ratios=mag_ratios, retention_ratio=MAG_CACHE_RETENTION,
            max_skip_steps=MAG_CACHE_MAX_SKIP,
        )
    if kind == "taylorseer":
        return TaylorSeerCacheConfig(
            cache_interval=max(1, int(threshold)),
            disable_cache_before_step=2,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=list(WAN_TAYLORSEER_MODULES),
        )
    if kind == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=max(1, int(threshold)),
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=lambda: pipeline.current_timestep,
        )
    raise ValueError(f"unknown step cache {kind!r}")


@dataclass
class StepCache:
    """One cache kind on a pipeline's transformers. Call ``prepare(steps)`` before every batch
    (``reset()`` when rows leave it): the hooks' per-run state is cleared (a batch that shrank after
    a cancellation must not compare residuals of different shapes), and MagCache is re-fitted to
    the batch's step count."""

    kind: StepCacheKind
    threshold: float
    pipeline: Any
    mag_ratios: list[float] | None = None
    # Called with each transformer once its hooks are made (a parallel worker binds them across ranks).
    on_enable: Callable[[torch.nn.Module], None] | None = None
    _steps: int | None = field(default=None, init=False)

    def prepare(self, steps: int) -> None:
        for transformer in _transformers(self.pipeline):
            if self._steps is not None and (self.kind != "magcache" or steps == self._steps):
                transformer._reset_stateful_cache()
                continue
            if self._steps is not None:
                transformer.disable_cache()
            transformer.enable_cache(_config(self.kind, self.threshold, self.pipeline, steps, self.mag_ratios))
            if self.on_enable is not None:
                self.on_enable(transformer)
        self._steps = steps

    def reset(self) -> None:
        for transformer in _transformers(self.pipeline):
            transformer._reset_stateful_cache()


def _transformers(pipeline: Any) -> list[torch.nn.Module]:
    return [m for m in (getattr(pipeline, "transformer", None), getattr(pipeline, "transformer_2", None)) if m is not None]


def calibrate_mag_ratios(pipeline: Any, run: Any, steps: int) -> list[float]:
    """MagCache's residual-magnitude ratios for this model: ``run()`` makes one pipeline call of
    ``steps`` steps with diffusers' calibration mode on; the ratios it reports for the cond pass
    are returned. The hooks are removed afterwards."""
    transformer = pipeline.transformer
    transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
    logger = logging.getLogger("diffusers.hooks.mag_cache")
    records: list[str] = []
    handler = _ListHandler(records)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it also prints the ratios
            run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        transformer.disable_cache()
    prefix = "MagCache Calibration Results: "
    ratios = [ast.literal_eval(r[len(prefix):]) for r in records if r.startswith(prefix)]
    if not ratios:
        raise RuntimeError("MagCache calibration reported no ratios")
    return [float(x) for x in ratios[0]]


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


class SkipCounter:
    """Counts transformer passes and the block computations that ran in them.

    A pass is one real execution of the transformer body (its patch embedding ran); a block
    computation is one block's self-attention running. Every cache kind here skips by not running
    a block or its attention, so ``skipped`` is what the cache really saved."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.blocks = len(transformer.blocks)
        self.passes = 0
        self.computed = 0
        self._handles = [transformer.patch_embedding.register_forward_pre_hook(self._on_pass)]
        self._handles += [block.attn1.to_q.register_forward_pre_hook(self._on_block) for block in transformer.blocks]

    def _on_pass(self, *_: Any) -> None:
        self.passes += 1

    def _on_block(self, *_: Any) -> None:
        self.computed += 1

    @property
    def expected(self) -> int:
        return self.passes * self.blocks

    @property
    def skipped_fraction(self) -> float:
        return 0.0 if not self.expected else 1 - self.computed / self.expected

    @property
    def skipped_passes(self) -> float:
        """Skipped block computations in units of whole transformer passes."""
        return (self.expected - self.computed) / self.blocks if self.blocks else 0.0

    def reset(self) -> None:
        self.passes = self.computed = 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
