"""Which accelerations a model runs with, and the presets that bundle them.

Every option is a switch with a measured speed-up and a measured quality bound
(docs/accelerations.md). ``describe`` is what a job reports in its ``accelerations`` field and
``pixel_settings`` is what enters the cache key: any option that changes the floats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StepCacheKind = Literal["none", "fbcache", "taylorseer", "magcache", "pab"]
PresetName = Literal["quality", "balanced", "fast"]


class AccelerationOptions(BaseModel):
    """How the transformer runs. Placement (device, dtype, offload, VAE tiling) is ``LoadOptions``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attention_backend: str = Field("native", description="diffusers attention dispatcher backend.")
    cfg_batching: bool = Field(False, description="Run the cond and uncond passes as one batched forward.")
    shared_time_embedding: bool = Field(
        False, description="Embed a row's timestep once, not per token, when its tokens share it (expand_timesteps)."
    )
    compile: bool = Field(False, description="torch.compile the repeated transformer blocks (regional).")
    step_cache: StepCacheKind = Field("none", description="Reuse transformer work across denoising steps.")
    step_cache_threshold: float | None = Field(
        None, gt=0, description="The cache's skip threshold; None: the one calibrated for the model."
    )
    quantization: Literal["none", "int8"] = Field("none", description="Transformer weights (VAE untouched).")
    backend: Literal["torch", "onnx"] = Field("torch", description="What executes the transformer.")
    vae_slicing: bool = Field(False, description="Decode one video of the batch at a time.")
    channels_last: bool = Field(False, description="VAE 3-D convolutions in channels-last memory format.")
    fused_ffn: bool = Field(
        False, description="On the CPU in float32: the transformer's feed-forward on oneDNN, its GELU fused."
    )
    group_offload: bool = Field(False, description="Stream transformer block groups from CPU (CUDA only).")

    def describe(self, threshold: float | None = None) -> list[str]:
        """The options in force, one short string each; empty for plain eager PyTorch.
        ``threshold``: the step cache's resolved knob, when it was left to the calibration."""
        parts: list[str] = []
        if self.attention_backend != "native":
            parts.append(f"attention={self.attention_backend}")
        if self.cfg_batching:
            parts.append("cfg_batching")
        if self.shared_time_embedding:
            parts.append("shared_time_embedding")
        if self.compile:
            parts.append("compile")
        if self.step_cache != "none":
            knob = self.step_cache_threshold if self.step_cache_threshold is not None else threshold
            parts.append(f"step_cache={self.step_cache}" + ("" if knob is None else f":{knob:g}"))
        if self.quantization != "none":
            parts.append(f"quantization={self.quantization}")
        if self.backend != "torch":
            parts.append(f"backend={self.backend}")
        if self.vae_slicing:
            parts.append("vae_slicing")
        if self.channels_last:
            parts.append("channels_last")
        if self.fused_ffn:
            parts.append("fused_ffn")
        if self.group_offload:
            parts.append("group_offload")
        return parts

    def pixel_settings(self, threshold: float | None = None) -> dict[str, object]:
        """The options that change output floats, for cache keys. Batching the CFG passes and
        regional compilation change kernels' rounding too (within float tolerance, by test), so
        they count: a cached video is byte-identical to what this server would produce now."""
        settings = self.model_dump(exclude={"vae_slicing", "group_offload"})
        if self.step_cache == "none":
            settings["step_cache_threshold"] = None  # a knob without a cache changes nothing
        elif self.step_cache_threshold is None:
            settings["step_cache_threshold"] = threshold  # the calibrated value: a new calibration is a new key
        return {f"accel_{name}": value for name, value in settings.items()}


class Preset(BaseModel):
    """A bundle: dtype, accelerations, and the share of the model's default steps it runs."""

    model_config = ConfigDict(frozen=True)

    name: PresetName
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    accelerations: AccelerationOptions
    steps_fraction: float = Field(gt=0, le=1)
    summary: str

    def default_steps(self, model_default: int) -> int:
        return max(1, round(model_default * self.steps_fraction))


# Measured on the micro model by `reelserve bench quality` (docs/accelerations.md). Every preset keeps
# the dtype the device does best (float32 on this CPU, where bfloat16 measured slower) and uses only
# step caches whose decisions follow the schedule, not the batch: a video must not depend on its
# batch-mates (First-Block Cache's does, so no preset uses it).
PRESETS: dict[str, Preset] = {
    "quality": Preset(
        name="quality",
        dtype="auto",
        accelerations=AccelerationOptions(cfg_batching=True, shared_time_embedding=True, channels_last=True, fused_ffn=True),
        steps_fraction=1.0,
        summary="Exact up to float rounding: CFG batching, the shared time embedding, the channels-last VAE and "
        "the fused feed-forward, all steps.",
    ),
    "balanced": Preset(
        name="balanced",
        dtype="auto",
        accelerations=AccelerationOptions(
            cfg_batching=True, shared_time_embedding=True, channels_last=True, fused_ffn=True, step_cache="magcache"
        ),
        steps_fraction=1.0,
        summary="Quality's options plus MagCache at its calibrated threshold, all steps.",
    ),
    "fast": Preset(
        name="fast",
        dtype="auto",
        accelerations=AccelerationOptions(
            cfg_batching=True, shared_time_embedding=True, channels_last=True, fused_ffn=True, step_cache="magcache"
        ),
        steps_fraction=0.8,
        summary="Balanced's options at 80 % of the steps.",
    ),
}


# What a server runs with when neither a preset nor a flag says otherwise: the options that compute
# the same up to float rounding. CFG batching (the quality harness's 60 dB floor): on the CPU a batch
# of four micro clips took 1.6 s instead of 2.3 s with it; on a GPU it doubles the rows of a forward,
# which a large model at a large shape may not have the memory for: a batch that runs out is split
# (the runner), and --no-cfg-batching turns it off. The shared time embedding: a tenth of the micro
# transformer's FLOPs (docs/benchmarks.md, "The hot path"). The channels-last VAE: a micro batch's
# decode 0.30 s -> 0.19 s on the CPU, a lone clip's 0.15 s -> 0.075 s (accel/vae_convolutions.py).
# The fused feed-forward (CPU float32 only; elsewhere nothing changes): a one-thread batch of four
# micro clips 2.04 s -> 1.93 s (accel/fused_ffn.py).
SERVING_DEFAULTS = AccelerationOptions(cfg_batching=True, shared_time_embedding=True, channels_last=True, fused_ffn=True)


def resolve(preset: str | None, overrides: dict[str, object]) -> tuple[AccelerationOptions, float]:
    """The options in force and the share of default steps: explicit ``overrides`` (None = unset)
    win over the preset's values, which win over ``SERVING_DEFAULTS``."""
    base = PRESETS[preset].accelerations if preset else SERVING_DEFAULTS
    chosen = {name: value for name, value in overrides.items() if value is not None}
    fraction = PRESETS[preset].steps_fraction if preset else 1.0
    return base.model_copy(update=chosen) if chosen else base, fraction
