"""The models this server can run: their limits, where their weights come from, how to load them."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import WanPipeline

from reelserve.accel.accelerate import Accelerated, accelerate, check_options
from reelserve.models.fingerprint import model_version
from reelserve.models.lora import LoraBank, LoraWeights
from reelserve.models.lora import install as install_lora_layers
from reelserve.models.micro import MICRO_WEIGHTS
from reelserve.models.options import LoadOptions, apply_cpu_threads, apply_options, resolve_placement
from reelserve.models.specs import (
    A14B_HUB_ID,
    I2V_A14B_HUB_ID,
    TI2V_5B_HUB_ID,
    ModelSpec,
    get_spec,
    list_specs,
    weights_source,
)
from reelserve.models.tiny import build_tiny_pipeline
from reelserve.models.wan import load_wan_pipeline, spatial_multiple
from reelserve.schemas.errors import ErrorCode, ReelserveError, invalid
from reelserve.schemas.requests import GenerationParams, ModelLimits

if TYPE_CHECKING:  # the engine builds on the models; only ``generate`` reaches up, at run time
    from reelserve.engine.cost_model import CallTiming

__all__ = ["LoadedModel", "ModelSpec", "get_spec", "list_specs", "load_model", "weights_source"]

# Smallest legal clip for warm-up: one latent frame plus one temporal block.
WARM_UP_FRAMES = 5
WARM_UP_STEPS = 2


@dataclass
class LoadedModel:
    """A model ready to run: ``PipelineRunner(pipeline, device, max_sequence_length, ...)`` serves it."""

    name: str
    limits: ModelLimits
    pipeline: Any
    device: torch.device
    dtype: torch.dtype
    max_sequence_length: int
    accelerated: Accelerated | None = None
    adapters: LoraBank | None = None  # LoRA adapters per row (``models/lora.py``); None: none taken
    ranks: Any = None  # a parallel worker's process group (``parallel.ranks.ParallelRanks``); None: one process
    last_calls: list[CallTiming] = field(default_factory=list)  # of the last ``generate``
    # This model and its weight-sharing copies, one per pipeline lane (``load_model(lanes=)``).
    lanes: list[LoadedModel] = field(default_factory=list, repr=False, compare=False)

    def warm_up(self, runs: int = 1, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run the pipeline ``runs`` times per batch size; return the seconds spent.

        The first call pays for lazy kernel setup and allocator growth, so a job does not. With
        compiled blocks the shape matters: each batch size is run at the model's default clip
        shape, so the serving path finds its graphs compiled. Without, the smallest legal shape
        is enough. Uses its own generators: the global RNG state is untouched.
        """
        compiled = self.accelerated is not None and self.accelerated.options.compile
        limits = self.limits
        if compiled:
            width, height, frames = limits.default_width, limits.default_height, limits.default_frames
        else:
            width = height = limits.spatial_multiple
            frames = WARM_UP_FRAMES
        # CFG batching doubles the batch the blocks see, but not for a request without guidance.
        guidances = [limits.default_guidance]
        if compiled and self.accelerated.options.cfg_batching:
            guidances.append(1.0)
        start = time.perf_counter()
        for _ in range(runs):
            for size in batch_sizes if compiled else (1,):
                for guidance in guidances:
                    self.generate(["warm-up"] * size, width, height, frames, WARM_UP_STEPS, guidance=guidance)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def generate(self, prompts: list[str], width: int, height: int, frames: int, steps: int,
                 seeds: list[int] | None = None, guidance: float | None = None) -> np.ndarray:
        """One batch through the runner serving uses (its loop, accelerations primed), for warm-up,
        calibration and benchmarks. Returns the videos, float in [0, 1], (B, F, H, W, 3)."""
        # Imported here: the engine builds on the models, not the other way round; only this
        # convenience reaches up, so that warm-up runs exactly the serving path.
        from reelserve.engine.row_inputs import RowInputs
        from reelserve.engine.runner import PipelineRunner

        guidance = self.limits.default_guidance if guidance is None else guidance
        seeds = seeds if seeds is not None else list(range(len(prompts)))
        # An image-to-video-only model runs every row from a first frame: a mid-grey one, through the
        # runner's inputs as a job's image goes.
        grey = _GreyFirstFrames(width, height) if self.limits.image_input == "required" else None
        rows = [
            (str(i), GenerationParams(
                model=self.name, prompt=prompt, width=width, height=height, num_frames=frames,
                fps=self.limits.default_fps, num_inference_steps=steps, guidance_scale=guidance,
                guidance_scale_2=guidance if self.limits.two_experts else None, seed=seed,
                input_reference=None if grey is None else grey.DIGEST,
            ))
            for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True))
        ]
        inputs = None if grey is None else RowInputs(grey)  # type: ignore[arg-type]
        runner = PipelineRunner(self.pipeline, self.device, self.max_sequence_length, accelerated=self.accelerated,
                                inputs=inputs, adapters=self.adapters, ranks=self.ranks)
        outcome = runner.run(rows)
        if outcome.errors:  # a row that did not fit in memory even alone
            raise MemoryError(next(iter(outcome.errors.values())).message)
        self.last_calls = outcome.calls  # what the runner measured (thread tuning reads it)
        return np.stack([outcome.frames[key] for key, _ in rows])


class _GreyFirstFrames:
    """The storage ``generate`` reads first frames from: every row's is mid-grey, at the clip's size."""

    DIGEST = "sha256:mid-grey"

    def __init__(self, width: int, height: int) -> None:
        from reelserve.inputs.images import to_png

        self.png = to_png(np.full((height, width, 3), 128, dtype=np.uint8))

    def get(self, key: str) -> bytes:
        return self.png


def _load_tiny(options: LoadOptions) -> WanPipeline:
    if options.path is not None:
        raise invalid("path", "model 'tiny' is built in code and loads no weights; leave path unset")
    device, dtype = resolve_placement(options)
    pipe = build_tiny_pipeline()
    apply_options(pipe, options, device, dtype)
    return pipe


def _load_micro(options: LoadOptions) -> WanPipeline:
    if options.path is None and not MICRO_WEIGHTS.is_dir():
        raise invalid(
            "path",
            f"model 'micro' finds no weights at {MICRO_WEIGHTS} (they ship with the package; is this a "
            "partial install?); train your own with `reelserve micro train --out DIR` and pass --model-path DIR",
        )
    return load_wan_pipeline(options.path or str(MICRO_WEIGHTS), "micro", options)


def _load_ti2v_5b(options: LoadOptions) -> WanPipeline:
    return load_wan_pipeline(options.path or TI2V_5B_HUB_ID, "ti2v-5b", options)


def _load_a14b(options: LoadOptions) -> WanPipeline:
    return load_wan_pipeline(options.path or A14B_HUB_ID, "a14b", options)


def _load_i2v_a14b(options: LoadOptions) -> WanPipeline:
    return load_wan_pipeline(options.path or I2V_A14B_HUB_ID, "i2v-a14b", options)


# Each spec's loader, by name: the table itself (``specs``) imports neither torch nor diffusers.
_LOADERS: dict[str, Callable[[LoadOptions], WanPipeline]] = {
    "tiny": _load_tiny, "micro": _load_micro, "wan2.2-ti2v-5b": _load_ti2v_5b, "wan2.2-t2v-a14b": _load_a14b,
    "wan2.2-i2v-a14b": _load_i2v_a14b,
}


def load_model(name: str, options: LoadOptions, lanes: int = 1) -> LoadedModel:
    """Load model ``name`` placed as ``options`` says. Option errors are raised before any weights
    are read; see ``load_wan_pipeline`` for the errors a bad ``path`` gives.

    ``lanes`` > 1 also makes ``lanes - 1`` copies of the pipeline that share its weights, each
    accelerated on its own (the accelerations keep per-pipeline state), in ``model.lanes``."""
    spec = get_spec(name)
    device, dtype = resolve_placement(options)
    apply_cpu_threads(options)
    check_options(options.accelerations, device, options.cpu_offload, two_experts=spec.limits.two_experts)
    pipeline = _LOADERS[spec.name](options)
    _check_limits_match(spec, pipeline)
    copies = [weight_sharing_copy(pipeline) for _ in range(lanes - 1)]  # before any acceleration
    bank = _adapter_bank(options, device, dtype)
    for each in (pipeline, *copies):  # before the accelerations: they see the wrapped layers as they are
        for transformer in (each.transformer, getattr(each, "transformer_2", None)):
            if bank is not None and transformer is not None:
                install_lora_layers(transformer, bank)
    model = _accelerated(spec, pipeline, options, device, dtype)
    model.lanes = [model, *(_accelerated(spec, copy_, options, device, dtype) for copy_ in copies)]
    for lane in model.lanes:
        lane.adapters = bank
    return model


def _adapter_bank(options: LoadOptions, device: torch.device, dtype: torch.dtype) -> LoraBank | None:
    """The lanes' one bank of adapters (its ``load`` is the server's: from the adapter registry)."""
    if not options.lora_adapters:
        return None

    def unset(adapter: str) -> LoraWeights:
        raise RuntimeError(f"adapter {adapter}: the model was loaded without a place to read adapters from")

    return LoraBank(unset, device, dtype, max_adapters=options.lora_adapters, max_bytes=options.lora_cache_mb * 2**20)


def weight_sharing_copy(pipeline: Any) -> Any:
    """A copy of ``pipeline`` with modules of its own around the very same parameter and buffer
    tensors: no weight is copied, and a forward, hook or cache installed on one is not on the other."""
    modules = [module for module in vars(pipeline).values() if isinstance(module, torch.nn.Module)]
    shared: dict[int, Any] = {}
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            shared[id(tensor)] = tensor
    return copy.deepcopy(pipeline, shared)


def _accelerated(spec: ModelSpec, pipeline: Any, options: LoadOptions, device: torch.device,
                 dtype: torch.dtype) -> LoadedModel:
    model = LoadedModel(
        name=spec.name,
        limits=spec.limits,
        pipeline=pipeline,
        device=device,
        dtype=dtype,
        max_sequence_length=spec.max_sequence_length,
    )
    side = spec.limits.spatial_multiple
    model.accelerated = accelerate(
        pipeline,
        options.accelerations,
        device=device,
        model=spec.name,
        calibration_run=lambda steps: model.generate(["calibration"], side, side, WARM_UP_FRAMES, steps),
        default_steps=spec.limits.default_steps,
        onnx_cache_dir=Path(options.onnx_cache_dir) if options.onnx_cache_dir else None,
        model_key=model_version(spec.name, weights_source(spec.name, options.path)),
        graph_breaks=options.graph_breaks,
    )
    return model


def _check_limits_match(spec: ModelSpec, pipeline: WanPipeline) -> None:
    """The limits promise shapes the pipeline must take without rounding; a mismatch is our bug."""
    multiple = spatial_multiple(pipeline)
    temporal = pipeline.vae_scale_factor_temporal
    if spec.limits.spatial_multiple % multiple or temporal != spec.limits.temporal_multiple:
        raise ReelserveError(
            ErrorCode.internal_error,
            f"model {spec.name!r} loaded with spatial/temporal multiples {multiple}/{temporal}, "
            f"but its limits say {spec.limits.spatial_multiple}/{spec.limits.temporal_multiple}",
        )
