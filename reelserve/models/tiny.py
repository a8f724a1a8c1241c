"""Toy-size Wan pipelines with seeded weights, built in code: no download, a few MB, fast on CPU.

``build_tiny_pipeline`` is the ``tiny`` model. The ``*_layout`` builders copy the component layout of
the real Wan2.2 checkpoints at toy scale, so tests can save one to disk and load it back through the
same path (``load_wan_pipeline``) that loads the real weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import UMT5Config, UMT5EncoderModel

from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tokenizer import build_byte_tokenizer

TEXT_DIM = 32
# The toy text encoder has relative position buckets only, so any length works; 32 keeps it cheap.
A14B_BOUNDARY_RATIO = 0.875
I2V_A14B_BOUNDARY_RATIO = 0.9

_M = TypeVar("_M", bound=torch.nn.Module)


def _seeded(seed: int, build: Callable[[], _M]) -> _M:
    """Build a module from ``seed`` without disturbing the caller's global RNG state.

    Modules built in code start in train mode; eval() turns dropout off so outputs are
    deterministic and a batched call matches single calls.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build()
    return module.eval()


def _text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )
    return UMT5EncoderModel(config)


def _vae_16ch() -> AutoencoderKLWan:
    """The Wan2.1 VAE layout (also used by Wan2.2-A14B): 16 latent channels, 8x spatial downsampling."""
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def _vae_48ch() -> AutoencoderKLWan:
    """The Wan2.2-TI2V-5B VAE layout: 48 channels, 2x2 pixel patching plus 8x downsampling = 16x."""
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    )


def _transformer(latent_channels: int, in_channels: int | None = None) -> WanTransformer3DModel:
    """``in_channels``: the latents' by default; more where a condition joins them (I2V-A14B)."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels or latent_channels,
        out_channels=latent_channels,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def build_tiny_pipeline(seed: int = 0) -> WanPipeline:
    """The ``tiny`` model: Wan2.1-style single transformer, 16-channel VAE, spatial multiple 16.

    Equal seeds give identical weights; the global RNG state is left as it was. Float32, on CPU,
    in eval mode. Call it with ``max_sequence_length=TINY_MAX_SEQUENCE_LENGTH``.
    """
    tokenizer = build_byte_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _text_encoder(len(tokenizer))),
        vae=_seeded(seed + 1, _vae_16ch),
        scheduler=_scheduler(),
        transformer=_seeded(seed + 2, lambda: _transformer(16)),
    )


def build_ti2v_5b_layout(seed: int = 0) -> WanPipeline:
    """Toy weights in the Wan2.2-TI2V-5B layout: ``expand_timesteps``, 48-channel residual VAE,
    one transformer, spatial multiple 32 (VAE 16 x patch 2)."""
    tokenizer = build_byte_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _text_encoder(len(tokenizer))),
        vae=_seeded(seed + 1, _vae_48ch),
        scheduler=_scheduler(),
        transformer=_seeded(seed + 2, lambda: _transformer(48)),
        boundary_ratio=None,
        expand_timesteps=True,
    )


def build_a14b_layout(seed: int = 0) -> WanPipeline:
    """Toy weights in the Wan2.2-T2V-A14B layout: a high-noise ``transformer`` and a low-noise
    ``transformer_2`` (different weights) switching at ``boundary_ratio`` 0.875; 16-channel VAE,
    spatial multiple 16 (VAE 8 x patch 2)."""
    tokenizer = build_byte_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _text_encoder(len(tokenizer))),
        vae=_seeded(seed + 1, _vae_16ch),
        scheduler=_scheduler(),
        transformer=_seeded(seed + 2, lambda: _transformer(16)),
        transformer_2=_seeded(seed + 3, lambda: _transformer(16)),
        boundary_ratio=A14B_BOUNDARY_RATIO,
    )


def build_i2v_a14b_layout(seed: int = 0) -> WanImageToVideoPipeline:
    """Toy weights in the Wan2.2-I2V-A14B layout, saved as that checkpoint is (a
    ``WanImageToVideoPipeline`` without an image encoder): two experts switching at ``boundary_ratio``
    0.9 whose ``in_channels`` are 36, the 16 noise channels, 4 of mask and 16 of the image's latents
    (``out_channels`` 16); 16-channel VAE, spatial multiple 16. ``load_wan_pipeline`` loads it as the
    ``WanPipeline`` the family runs; build ``WanImageToVideoPipeline``s on its components to compare."""
    tokenizer = build_byte_tokenizer()
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _text_encoder(len(tokenizer))),
        vae=_seeded(seed + 1, _vae_16ch),
        scheduler=_scheduler(),
        image_processor=None,
        image_encoder=None,
        transformer=_seeded(seed + 2, lambda: _transformer(16, in_channels=36)),
        transformer_2=_seeded(seed + 3, lambda: _transformer(16, in_channels=36)),
        boundary_ratio=I2V_A14B_BOUNDARY_RATIO,
    )
