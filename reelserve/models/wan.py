"""Load real Wan2.2 checkpoints (diffusers layout) and check they are the model their name promises.

A directory of the wrong model loads without complaint in diffusers and fails later, mid-job, or
silently produces the wrong video; ``load_wan_pipeline`` rejects it at load time instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import diffusers.utils.deprecation_utils
from diffusers import WanPipeline

from reelserve.models.minilm import bert_text_encoder_accepted, minilm_components, needs_minilm
from reelserve.models.options import LoadOptions, apply_options, component_dtypes, resolve_placement
from reelserve.models.specs import A14B_HUB_ID, I2V_A14B_HUB_ID, TI2V_5B_HUB_ID, WAN_MAX_SEQUENCE_LENGTH
from reelserve.schemas.errors import ErrorCode, ReelserveError, invalid

WanLayoutName = Literal["ti2v-5b", "a14b", "i2v-a14b", "micro"]

# The released values, for checkpoints whose config lacks ``boundary_ratio``.
A14B_DEFAULT_BOUNDARY_RATIO = 0.875
I2V_A14B_DEFAULT_BOUNDARY_RATIO = 0.9

# diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; the old name still works there
# but warns, and older releases (the project allows >=0.35) know only the old one.
_DTYPE_KWARG = "dtype" if hasattr(diffusers.utils.deprecation_utils, "_resolve_dtype") else "torch_dtype"


@dataclass(frozen=True)
class WanLayout:
    """What distinguishes one Wan2.2 checkpoint's components from the other's."""

    title: str
    spatial_multiple: int  # VAE spatial factor x transformer patch size
    vae_z_dim: int
    vae_residual: bool
    expand_timesteps: bool
    two_experts: bool
    # Image to video by channel concat (I2V-A14B): the transformers take the noise's z_dim channels,
    # a mask's (the VAE's temporal stride) and the image latents' z_dim more; no image encoder.
    image_concat: bool = False
    default_boundary_ratio: float | None = None  # two experts: when the config has none


LAYOUTS: dict[WanLayoutName, WanLayout] = {
    "ti2v-5b": WanLayout(
        "Wan2.2-TI2V-5B",
        spatial_multiple=32,
        vae_z_dim=48,
        vae_residual=True,
        expand_timesteps=True,
        two_experts=False,
    ),
    "a14b": WanLayout(
        "Wan2.2-T2V-A14B",
        spatial_multiple=16,
        vae_z_dim=16,
        vae_residual=False,
        expand_timesteps=False,
        two_experts=True,
        default_boundary_ratio=A14B_DEFAULT_BOUNDARY_RATIO,
    ),
    "i2v-a14b": WanLayout(
        "Wan2.2-I2V-A14B",
        spatial_multiple=16,
        vae_z_dim=16,
        vae_residual=False,
        expand_timesteps=False,
        two_experts=True,
        image_concat=True,
        default_boundary_ratio=I2V_A14B_DEFAULT_BOUNDARY_RATIO,
    ),
    # reelserve's own model (reelserve/micro): the TI2V-5B layout at micro scale, VAE 8x spatial.
    "micro": WanLayout(
        "reelserve micro",
        spatial_multiple=16,
        vae_z_dim=16,
        vae_residual=True,
        expand_timesteps=True,
        two_experts=False,
    ),
}


def load_wan_pipeline(path: str, expected: WanLayoutName, options: LoadOptions) -> WanPipeline:
    """Load a diffusers-format Wan2.2 pipeline from a local directory or hub id, check it has the
    ``expected`` layout, and place it as ``options`` says (``options.path`` is not consulted).

    Raises ``ReelserveError`` with ``param="path"``: ``invalid_parameter`` when ``path`` is not a
    directory and cannot be loaded from the hub, ``invalid_request`` when it holds a different model.
    A14B checkpoints whose config lacks ``boundary_ratio`` get the released value (T2V 0.875, I2V 0.9).
    An I2V-A14B checkpoint (a ``WanImageToVideoPipeline`` directory without an image encoder) loads as a
    ``WanPipeline`` too: the same modules, run by ``WanFamily``.
    """
    device, dtype = resolve_placement(options)
    local = _local_dir(path)
    # The micro model is saved without its text encoder: frozen MiniLM, shipped by a dependency.
    shared = minilm_components() if expected == "micro" and local is not None and needs_minilm(local) else {}
    try:
        with bert_text_encoder_accepted():
            pipe = WanPipeline.from_pretrained(
                path, local_files_only=local is not None, **shared, **{_DTYPE_KWARG: component_dtypes(dtype)}
            )
    except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError... for a bad source
        where = (
            f"directory {path!r}" if local is not None else f"{path!r} (not a local directory; tried the hub)"
        )
        raise invalid("path", f"cannot load {LAYOUTS[expected].title} from {where}: {exc}") from exc
    check_layout(pipe, expected, path)
    apply_options(pipe, options, device, dtype)
    return pipe


def spatial_multiple(pipe: Any) -> int:
    """Width and height must be multiples of this: VAE downsampling x transformer patch size."""
    transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    return int(pipe.vae_scale_factor_spatial * transformer.config.patch_size[1])


def check_layout(pipe: WanPipeline, expected: WanLayoutName, source: str) -> None:
    """Raise ``ReelserveError(invalid_request, param="path")`` listing every way ``pipe`` differs
    from the ``expected`` layout; fills in an A14B's ``boundary_ratio`` when the config lacks it."""
    layout = LAYOUTS[expected]
    problems = _layout_problems(pipe, layout)
    if problems:
        raise ReelserveError(
            ErrorCode.invalid_request,
            f"{source!r} does not hold a {layout.title} pipeline: " + "; ".join(problems),
            param="path",
        )
    if layout.two_experts and pipe.config.boundary_ratio is None:
        pipe.register_to_config(boundary_ratio=layout.default_boundary_ratio)


def _layout_problems(pipe: WanPipeline, layout: WanLayout) -> list[str]:
    if pipe.transformer is None:
        return ["transformer is missing"]
    problems = []
    expand = bool(pipe.config.expand_timesteps)
    if expand != layout.expand_timesteps:
        problems.append(f"expand_timesteps is {expand}, expected {layout.expand_timesteps}")
    vae = pipe.vae.config
    if vae.z_dim != layout.vae_z_dim:
        problems.append(f"VAE z_dim is {vae.z_dim}, expected {layout.vae_z_dim}")
    if bool(vae.is_residual) != layout.vae_residual:
        problems.append(f"VAE is_residual is {vae.is_residual}, expected {layout.vae_residual}")
    problems += _channel_problems(pipe, layout)
    multiple = spatial_multiple(pipe)
    if multiple != layout.spatial_multiple:
        problems.append(f"spatial multiple (VAE x patch) is {multiple}, expected {layout.spatial_multiple}")
    if layout.two_experts and pipe.transformer_2 is None:
        problems.append("transformer_2 (the low-noise expert) is missing")
    if not layout.two_experts and pipe.transformer_2 is not None:
        problems.append("it has a transformer_2, but this model has a single transformer")
    return problems


def _channel_problems(pipe: WanPipeline, layout: WanLayout) -> list[str]:
    """The experts' input channels (and, with image concat, no image encoder's embeddings)."""
    z_dim = pipe.vae.config.z_dim
    experts = [(name, model) for name in ("transformer", "transformer_2")
               if (model := getattr(pipe, name, None)) is not None]
    if not layout.image_concat:
        return [f"{name} in_channels {model.config.in_channels} != VAE z_dim {z_dim}"
                for name, model in experts if model.config.in_channels != z_dim]
    expected = 2 * z_dim + pipe.vae_scale_factor_temporal  # noise, mask, image latents
    problems = [f"{name} in_channels is {model.config.in_channels}, expected {expected} (noise {z_dim} + mask "
                f"{pipe.vae_scale_factor_temporal} + image latents {z_dim}: image to video by channel concat)"
                for name, model in experts if model.config.in_channels != expected]
    problems += [f"{name} takes image-encoder embeddings (image_dim {model.config.image_dim}): a Wan2.1 I2V "
                 "layout, not this one" for name, model in experts if model.config.image_dim is not None]
    return problems


def _local_dir(path: str) -> Path | None:
    """The directory ``path`` names, or None when it should be tried as a hub id.

    Anything that exists, or is shaped like a filesystem path rather than ``org/name``, is
    treated as local, so a typo in a path gives "no such directory" instead of a hub lookup.
    """
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return candidate
    if candidate.exists():
        raise invalid("path", f"model path {path!r} is a file; expected a diffusers model directory")
    parts = path.split("/")
    looks_like_hub_id = len(parts) == 2 and all(parts) and not path.startswith((".", "~"))
    if not looks_like_hub_id:
        raise invalid("path", f"model directory {path!r} does not exist")
    return None
