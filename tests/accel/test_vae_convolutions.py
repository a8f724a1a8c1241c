"""The VAE's convolutions in channels-last layout and on oneDNN compute what diffusers' own do."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch.profiler import ProfilerActivity, profile

from reelserve.accel.vae_convolutions import _pad_space_in_convolution, channels_last_vae
from reelserve.micro.architecture import build_vae
from reelserve.models.tiny import _vae_16ch


def _latents(vae: AutoencoderKLWan, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.randn(batch, vae.config.z_dim, 3, 4, 4, generator=generator)


def _video(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 9, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1


@pytest.fixture(params=["micro layout (Wan2.2 residual)", "tiny layout (Wan2.1)"])
def vae(request: pytest.FixtureRequest) -> AutoencoderKLWan:
    torch.manual_seed(0)
    return (build_vae() if request.param.startswith("micro") else _vae_16ch()).eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_and_encode_match_diffusers_within_rounding(vae: AutoencoderKLWan, batch: int) -> None:
    fast = copy.deepcopy(vae)
    assert channels_last_vae(fast) == sum(isinstance(m, WanCausalConv3d) for m in vae.modules()) > 0
    with torch.inference_mode():
        latents, video = _latents(vae, batch), _video(batch)
        expected, got = vae.decode(latents).sample, fast.decode(latents).sample
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 1e-4
        assert not torch.equal(expected, torch.zeros_like(expected))  # a real comparison, not of two blanks
        means = vae.encode(video).latent_dist.mean, fast.encode(video).latent_dist.mean
        assert (means[0] - means[1]).abs().max().item() < 1e-4


def test_padding_inside_the_convolution_is_bit_identical(vae: AutoencoderKLWan) -> None:
    """Without the layout change, moving the spatial zeros into oneDNN's convolution changes no bit."""
    rerouted = copy.deepcopy(vae)
    for module in rerouted.modules():
        if isinstance(module, WanCausalConv3d):
            _pad_space_in_convolution(module)
    with torch.inference_mode():
        latents = _latents(vae, 2)
        assert torch.equal(vae.decode(latents).sample, rerouted.decode(latents).sample)


def test_a_lone_clip_decodes_on_onednn_not_torchs_native_convolution(vae: AutoencoderKLWan) -> None:
    def kernels(model: AutoencoderKLWan) -> set[str]:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model.decode(_latents(model, 1))
        return {event.key for event in prof.key_averages()}

    fast = copy.deepcopy(vae)
    channels_last_vae(fast)
    assert "aten::slow_conv3d_forward" in kernels(vae)  # torch's own choice for one small clip
    used = kernels(fast)
    assert "aten::slow_conv3d_forward" not in used and "aten::mkldnn_convolution" in used


def test_installing_twice_reroutes_once(vae: AutoencoderKLWan) -> None:
    assert channels_last_vae(vae) > 0
    assert channels_last_vae(vae) == 0
    with torch.inference_mode():
        assert vae.decode(_latents(vae, 1)).sample.isfinite().all()
