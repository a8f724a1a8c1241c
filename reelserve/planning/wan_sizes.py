"""The Wan2.2 transformers at full size, as ``diffusers.WanTransformer3DModel`` configs, with the latent
geometry of each model's VAE and the video each model is meant to make.

The transformer configs match ``get_transformer_config`` in diffusers' ``scripts/convert_wan_to_diffusers.py``
("Wan2.2-TI2V-5B", "Wan2.2-T2V-A14B") and the ``transformer/config.json`` (and A14B's ``transformer_2``) of the
Wan-AI ``*-Diffusers`` repositories; the VAE factors match Wan's ``vae_stride`` ((4, 16, 16) for TI2V-5B,
(4, 8, 8) for A14B) and the diffusers ``AutoencoderKLWan`` configs (``scale_factor_spatial``, ``z_dim``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class VaeGeometry:
    """How a model's VAE shrinks a video into latents."""

    spatial: int  # video pixels per latent pixel, along height and along width
    temporal: int  # video frames per latent frame, after the first
    channels: int

    def latent_frames(self, frames: int) -> int:
        # The first frame is encoded alone; every later group of `temporal` frames becomes one latent frame.
        return (frames - 1) // self.temporal + 1

    def latent_shape(self, frames: int, width: int, height: int) -> tuple[int, int, int, int]:
        """(channels, latent frames, latent height, latent width) for one video; ValueError if the size does
        not divide into whole latent pixels."""
        if width % self.spatial or height % self.spatial:
            raise ValueError(f"{width}x{height} is not a multiple of the VAE's {self.spatial}x spatial factor")
        return self.channels, self.latent_frames(frames), height // self.spatial, width // self.spatial


@dataclass(frozen=True)
class WanModel:
    """One Wan2.2 text-to-video model, as far as timing its denoising step needs."""

    name: str
    transformer: dict[str, Any]  # keyword arguments of diffusers.WanTransformer3DModel
    experts: int  # transformers the pipeline holds; each denoising step runs exactly one of them
    vae: VaeGeometry
    frames: int
    fps: int
    resolutions: dict[str, tuple[int, int]]  # label -> (width, height)
    # Wan2.2 TI2V (the pipeline's expand_timesteps) gives every latent token its own timestep, so the time
    # embedding runs once per token rather than once per video.
    per_token_timesteps: bool
    text_len: int = 512  # UMT5 tokens the Wan pipelines pad every prompt to

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(channels, latent frames, latent height, latent width) of this model's video at ``width`` x
        ``height``; ValueError unless both divide into whole patches (VAE factor x patch size)."""
        _, p_h, p_w = self.transformer["patch_size"]
        step_h, step_w = self.vae.spatial * p_h, self.vae.spatial * p_w
        if width % step_w or height % step_h:
            raise ValueError(f"{self.name} needs width a multiple of {step_w} and height of {step_h}, "
                             f"not {width}x{height}")
        return self.vae.latent_shape(self.frames, width, height)


_SHARED = {
    "patch_size": (1, 2, 2),
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}

TI2V_5B = WanModel(
    name="ti2v-5b",
    transformer={**_SHARED, "num_attention_heads": 24, "num_layers": 30, "ffn_dim": 14336,
                 "in_channels": 48, "out_channels": 48},
    experts=1,
    vae=VaeGeometry(spatial=16, temporal=4, channels=48),
    frames=121,  # 5 s at 24 fps
    fps=24,
    # 1280x704, not 1280x720: TI2V-5B needs sizes divisible by 32 (VAE 16 x patch 2).
    resolutions={"480p": (832, 480), "720p": (1280, 704)},
    per_token_timesteps=True,
)

T2V_A14B = WanModel(
    name="a14b",
    transformer={**_SHARED, "num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824,
                 "in_channels": 16, "out_channels": 16},
    experts=2,  # high-noise and low-noise experts, same architecture
    vae=VaeGeometry(spatial=8, temporal=4, channels=16),
    frames=81,  # 5 s at 16 fps
    fps=16,
    resolutions={"480p": (832, 480), "720p": (1280, 720)},
    per_token_timesteps=False,
)

MODELS: dict[str, WanModel] = {model.name: model for model in (TI2V_5B, T2V_A14B)}

# Small enough that a CPU runs a step in milliseconds; channels, patch and VAE geometry stay as the real
# model's so the input shapes are built the same way.
TOY_TRANSFORMER = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64,
                   "text_dim": 32}
TOY_RESOLUTIONS = {"480p": (64, 64), "720p": (96, 96)}
TOY_FRAMES = 9


def toy(model: WanModel) -> WanModel:
    """The same model shrunk to a CPU smoke-test size; keeps its name and resolution labels."""
    return replace(model, transformer={**model.transformer, **TOY_TRANSFORMER}, frames=TOY_FRAMES,
                   resolutions=TOY_RESOLUTIONS)


@dataclass(frozen=True)
class ForwardFlops:
    """Multiply-add FLOPs (2 per MAC) of one batch-1 transformer forward; norms, RoPE and the modulation's
    elementwise work are left out (well under 1 % at these sizes)."""

    projections: float  # the blocks' weight matmuls: attention projections and feed-forward
    attention: float  # QK^T and AV, self- and cross-attention: quadratic in tokens
    embeddings: float  # patch embedding, text and time embedders, output projection

    @property
    def total(self) -> float:
        return self.projections + self.attention + self.embeddings


def patch_tokens(config: dict[str, Any], latent_shape: tuple[int, int, int, int]) -> int:
    """Sequence length the transformer sees: latent frames x height x width, each divided by the patch."""
    _, frames, height, width = latent_shape
    p_t, p_h, p_w = config["patch_size"]
    return (frames // p_t) * (height // p_h) * (width // p_w)


def forward_flops(config: dict[str, Any], latent_shape: tuple[int, int, int, int], text_len: int,
                  per_token_timesteps: bool = False) -> ForwardFlops:
    """FLOPs of one forward over a (channels, frames, height, width) latent and ``text_len`` text tokens."""
    tokens = patch_tokens(config, latent_shape)
    p_t, p_h, p_w = config["patch_size"]
    d = config["num_attention_heads"] * config["attention_head_dim"]
    per_layer = (
        4 * 2 * tokens * d * d  # self-attention Q, K, V, O
        + 2 * 2 * tokens * d * d  # cross-attention Q, O
        + 2 * 2 * text_len * d * d  # cross-attention K, V over the text
        + 2 * 2 * tokens * d * config["ffn_dim"]  # feed-forward up and down
    )
    attention = 2 * 2 * tokens * tokens * d + 2 * 2 * tokens * text_len * d
    patch = latent_shape[0] * p_t * p_h * p_w
    time_tokens = tokens if per_token_timesteps else 1
    embeddings = (
        2 * tokens * patch * d  # patch embedding (a strided conv = one matmul per token)
        + 2 * text_len * (config["text_dim"] * d + d * d)  # text embedder, two linears
        + 2 * time_tokens * (config["freq_dim"] * d + d * d + d * 6 * d)  # time embedder and 6-way projection
        + 2 * tokens * d * config["out_channels"] * p_t * p_h * p_w  # output projection
    )
    layers = config["num_layers"]
    return ForwardFlops(projections=layers * per_layer, attention=layers * attention, embeddings=embeddings)
