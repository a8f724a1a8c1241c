"""The model registry's table: each model's name, limits and where its weights come from.

Importing this needs no torch or diffusers (``reelserve models`` answers at once); loading a model is
``registry.load_model``'s business, which finds the loader by the spec's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reelserve.models.micro import MICRO_ADAPTERS, MICRO_CARD, MICRO_MAX_SEQUENCE_LENGTH, MICRO_WEIGHTS
from reelserve.schemas.errors import ErrorCode, ReelserveError
from reelserve.schemas.model_info import ModelCard
from reelserve.schemas.requests import ModelLimits

TI2V_5B_HUB_ID = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
A14B_HUB_ID = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
I2V_A14B_HUB_ID = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
# Real Wan checkpoints were trained with 512 UMT5 tokens per prompt.
WAN_MAX_SEQUENCE_LENGTH = 512
TINY_MAX_SEQUENCE_LENGTH = 32


@dataclass(frozen=True)
class ModelSpec:
    """One servable model. ``loader`` returns a placed, ready pipeline for the given options."""

    name: str
    description: str
    limits: ModelLimits
    default_source: str | None  # hub id for from_pretrained models; None when built in code
    max_sequence_length: int = WAN_MAX_SEQUENCE_LENGTH  # text tokens per prompt
    card: ModelCard | None = None  # what it can draw, for its users
    # Adapters trained for the default weights, offered as public ones when the server takes adapters.
    bundled_adapters: Path | None = None


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="tiny",
        description="Toy Wan pipeline with seeded random weights, built in code; for tests and demos.",
        limits=ModelLimits(
            spatial_multiple=16,
            max_width=256,
            max_height=256,
            max_frames=33,
            max_steps=50,
            default_width=64,
            default_height=64,
            default_frames=9,
            default_fps=8,
            default_steps=4,
            default_guidance=5.0,
            two_experts=False,
        ),
        default_source=None,
        max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
    ),
    ModelSpec(
        name="micro",
        description=(
            "reelserve's own micro Wan model in the TI2V-5B layout, trained on a synthetic world of moving "
            "shapes; weights ship with the package."
        ),
        limits=ModelLimits(
            # The VAE x patch multiple is 8, but WanPipeline insists on multiples of 16.
            spatial_multiple=16,
            max_width=128,
            max_height=128,
            max_frames=33,
            max_steps=100,
            default_width=64,
            default_height=64,
            default_frames=17,
            default_fps=8,
            default_steps=25,
            default_guidance=5.0,
            two_experts=False,
            image_input="optional",  # TI2V: a first frame through expand_timesteps
        ),
        default_source=None,
        max_sequence_length=MICRO_MAX_SEQUENCE_LENGTH,
        bundled_adapters=MICRO_ADAPTERS,
        card=MICRO_CARD,
    ),
    ModelSpec(
        name="wan2.2-ti2v-5b",
        description="Wan2.2 TI2V 5B: one transformer, 48-channel VAE; trained at 1280x704 and 704x1280.",
        limits=ModelLimits(
            spatial_multiple=32,
            max_width=1280,
            max_height=1280,
            max_frames=121,
            max_steps=100,
            default_width=1280,
            default_height=704,
            default_frames=121,
            default_fps=24,
            default_steps=50,
            default_guidance=5.0,
            two_experts=False,
            image_input="optional",  # TI2V: a first frame through expand_timesteps
        ),
        default_source=TI2V_5B_HUB_ID,
    ),
    ModelSpec(
        name="wan2.2-t2v-a14b",
        description="Wan2.2 T2V A14B: high- and low-noise 14B experts; guidance_scale_2 steers the second.",
        limits=ModelLimits(
            spatial_multiple=16,
            max_width=1280,
            max_height=1280,
            max_frames=81,
            max_steps=100,
            default_width=1280,
            default_height=720,
            default_frames=81,
            default_fps=16,
            default_steps=40,
            default_guidance=4.0,
            two_experts=True,
        ),
        default_source=A14B_HUB_ID,
    ),
    ModelSpec(
        name="wan2.2-i2v-a14b",
        description=(
            "Wan2.2 I2V A14B: image to video (a first frame required), high- and low-noise 14B experts; "
            "480p and 720p."
        ),
        limits=ModelLimits(
            spatial_multiple=16,
            max_width=1280,
            max_height=1280,
            max_frames=81,
            max_steps=100,
            default_width=1280,
            default_height=720,
            default_frames=81,
            default_fps=16,
            default_steps=40,
            default_guidance=3.5,  # Wan2.2's i2v-A14B sample_guide_scale, both experts
            two_experts=True,
            image_input="required",  # the image's latents join the noise on the channel axis
            video_input=False,
        ),
        default_source=I2V_A14B_HUB_ID,
    ),
)


def list_specs() -> list[ModelSpec]:
    """Every servable model, in a stable order."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``; ``ReelserveError(unknown_model, param="model")`` naming the
    available models otherwise."""
    for spec in _SPECS:
        if spec.name == name:
            return spec
    available = ", ".join(spec.name for spec in _SPECS)
    raise ReelserveError(
        ErrorCode.unknown_model, f"unknown model {name!r}; available: {available}", param="model"
    )


def weights_source(name: str, path: str | None) -> str | None:
    """Where ``name``'s weights come from with this ``path`` option: a directory, a hub id, or
    None for a model built in code. What cache keys fingerprint, known before the model loads."""
    if path is not None:
        return path
    if name == "micro":
        return str(MICRO_WEIGHTS)
    return get_spec(name).default_source


@dataclass(frozen=True)
class SamplerTraits:
    """What the served weights' sampler can do: take a timestep shift (its ``flow_shift``), and noise a
    source to a timestep (``add_noise``: re-drawing a clip, remixes). Wan's UniPC does both;
    FlowMatchEuler neither (its ``shift`` is its own config, and it has ``scale_noise`` instead)."""

    takes_shift: bool = True
    redraws: bool = True


# Those Wan ships and its usual replacement, known here so the API role imports no diffusers for them.
_KNOWN_SAMPLERS = {"UniPCMultistepScheduler": SamplerTraits(), "DPMSolverMultistepScheduler": SamplerTraits(),
                   "FlowMatchEulerDiscreteScheduler": SamplerTraits(False, False)}


def sampler_traits(source: str | None) -> SamplerTraits:
    """The traits of the scheduler class a weights directory's ``model_index.json`` names (the class
    diffusers builds), read without loading anything, so a server that loads no weights (the API role)
    knows them too. A hub id or a model built in code has Wan's UniPC; a class not known here is
    looked up in diffusers (imported then)."""
    index = Path(source) / "model_index.json" if source is not None else None
    if index is None or not index.is_file():
        return SamplerTraits()
    try:
        name = json.loads(index.read_text())["scheduler"][1]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return SamplerTraits()  # the loader says what is wrong with the directory
    if name in _KNOWN_SAMPLERS:
        return _KNOWN_SAMPLERS[name]
    try:
        import inspect

        import diffusers

        scheduler = getattr(diffusers, name)
        return SamplerTraits("flow_shift" in inspect.signature(scheduler.__init__).parameters,
                             hasattr(scheduler, "add_noise"))
    except Exception:  # noqa: BLE001 - not a diffusers class, or one missing a backend: the loader says so
        return SamplerTraits()


def weights_limits(spec: ModelSpec, path: str | None) -> ModelLimits:
    """``spec``'s limits for the weights at ``path`` (its default without): what their sampler cannot do
    is refused up front (a 422 naming the field), not found out by a failed run."""
    traits = sampler_traits(weights_source(spec.name, path))
    return spec.limits.model_copy(update={"flow_shift": traits.takes_shift,
                                          "video_input": spec.limits.video_input and traits.redraws})
