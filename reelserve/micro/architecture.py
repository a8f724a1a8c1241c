"""The micro model's components: the real Wan2.2 diffusers classes at micro scale, in the
Wan2.2-TI2V-5B layout.

As in the 5B: the VAE patchifies 2x2 before its encoder (``patch_size=2``) and compresses 8x in space
(16x in the 5B) and 4x in time; the pipeline has ``expand_timesteps=True``, so every latent token
carries its own timestep and the same weights serve ``WanPipeline`` (text only) and
``WanImageToVideoPipeline`` (the first latent frame given clean, at timestep 0; no image encoder).
The text encoder is frozen all-MiniLM-L6-v2 (``reelserve.models.minilm``), as the 5B's is a frozen
UMT5. A 17-frame 64x64 clip is 5 x 8 x 8 latents of 16 channels; with the (1, 2, 2) patch the
transformer sees 5 x 4 x 4 = 80 tokens.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

from reelserve.models.micro import MICRO_MAX_SEQUENCE_LENGTH
from reelserve.models.minilm import MINILM_DIM, minilm_components

LATENT_CHANNELS = 16
MAX_SEQUENCE_LENGTH = MICRO_MAX_SEQUENCE_LENGTH  # MiniLM word pieces per prompt; captions are under 24
FLOW_SHIFT = 2.0


def build_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=32,
        z_dim=LATENT_CHANNELS,
        in_channels=12,  # 3 colours x the 2x2 patch
        out_channels=12,
        patch_size=2,
        # Wan2.2's residual blocks: their averaging shortcuts hand the decoder colour and position
        # from the first step, where the Wan2.1 blocks took hundreds of steps to pass colour at all.
        # They need the last level as wide as the one before it, hence [1, 2, 2].
        is_residual=True,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        scale_factor_spatial=8,
        scale_factor_temporal=4,
        # Placeholders until training measures the real statistics of the latents.
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )


def build_transformer(width: int = 192, layers: int = 6) -> WanTransformer3DModel:
    # The (1, 2, 2) patch is fixed: expand_timesteps pipelines build per-token timesteps by taking
    # every second latent row and column.
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=width // 32,
        attention_head_dim=32,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=MINILM_DIM,
        freq_dim=256,
        ffn_dim=3 * width,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def build_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT)


def build_untrained_pipeline(seed: int, width: int = 192, layers: int = 6) -> WanPipeline:
    """The VAE and transformer freshly initialised from ``seed`` (the global RNG state is left as it
    was), with the pretrained text encoder."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = build_vae()
        transformer = build_transformer(width, layers)
    return WanPipeline(
        **minilm_components(),
        vae=vae,
        scheduler=build_scheduler(),
        transformer=transformer,
        expand_timesteps=True,
    )
