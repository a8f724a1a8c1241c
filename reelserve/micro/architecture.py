"""The micro model's untrained components: the real Wan2.2 diffusers classes at micro scale.

Sized so one 17-frame 64x64 clip at 25 steps with guidance takes about a second on 2 CPU cores:
the transformer sees 5 x 8 x 8 = 320 tokens, and the VAE compresses 4x in time and space.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from reelserve.micro.captions import vocabulary
from reelserve.models.micro import MICRO_MAX_SEQUENCE_LENGTH
from reelserve.models.tokenizer import build_word_tokenizer

LATENT_CHANNELS = 8
TEXT_DIM = 64
MAX_SEQUENCE_LENGTH = MICRO_MAX_SEQUENCE_LENGTH  # words per prompt; captions are under 16
FLOW_SHIFT = 2.0


def build_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=16,
        z_dim=LATENT_CHANNELS,
        # Wan2.2's residual blocks: their averaging shortcuts hand the decoder colour and position
        # from the first step, where the Wan2.1 blocks took hundreds of steps to pass colour at all.
        # They need the last level as wide as the one before it, hence [1, 2, 2].
        is_residual=True,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        scale_factor_spatial=4,
        scale_factor_temporal=4,
        # Placeholders until training measures the real statistics of the latents.
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )


def build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        dropout_rate=0.0,
    )
    return UMT5EncoderModel(config)


def build_transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=384,
        num_layers=4,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def build_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT)


def build_untrained_pipeline(seed: int) -> WanPipeline:
    """Every component freshly initialised from ``seed``; the global RNG state is left as it was."""
    tokenizer = build_word_tokenizer(vocabulary())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = build_vae()
        text_encoder = build_text_encoder(len(tokenizer))
        transformer = build_transformer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=build_scheduler(),
        transformer=transformer,
    )
