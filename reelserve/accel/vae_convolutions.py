"""The VAE's 3-D convolutions in channels-last layout, and on the CPU always on oneDNN.

The Wan VAE decoder is all conv3d: a fifth to a third of a micro batch's time on the CPU once the
transformer is cheap (docs/benchmarks.md, "The hot path"). Three things made it slow there:

1. **Layout.** With NCDHW weights oneDNN reorders every input and output to its blocked layout and
   back; channels-last (NDHWC) weights let it run its NDHWC kernels without the reorders, and make
   the decoder's RMS norms (over the channel dimension) reduce over contiguous memory: 2 ms against
   0.13 ms for one of them.
2. **torch's kernel choice.** For a small input of one clip with 3x3 kernels torch picks its native
   ``slow_conv3d`` (unfold and a matrix product) over oneDNN: a lone micro clip's decode took 0.15 s
   that way and 0.075 s on oneDNN. On the CPU each causal convolution here calls oneDNN directly.
3. **Padding.** ``WanCausalConv3d`` pads all three dimensions with ``F.pad`` (a filled copy of the
   input, slow in channels-last) before a convolution without padding. Spatial zero padding is the
   convolution's own here; only the causal time padding (what the frame cache does not supply)
   stays a ``F.pad``. The same zeros, so the same sums: bit-identical without channels-last.

A batch of four micro clips decoded in 0.30 s before and 0.19 s after (one thread). Channels-last
rounds differently: up to 6e-6 on the decoder's [-1, 1] output (tested against diffusers' own).
On a GPU (or in half precision) only the layout changes (cuDNN's NDHWC kernels); not measured there
yet.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d


def channels_last_vae(vae: torch.nn.Module) -> int:
    """Put ``vae``'s 3-D convolutions in channels-last layout and, on the CPU, run its causal
    convolutions as described above. Returns how many causal convolutions now run that way."""
    weight = next(vae.parameters())
    # float32 only: what was measured, and what oneDNN runs on every x86 CPU.
    on_cpu = weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
    rerouted = 0
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
        if on_cpu and isinstance(module, WanCausalConv3d) and "forward" not in vars(module):
            _pad_space_in_convolution(module)
            rerouted += 1
    return rerouted


def _pad_space_in_convolution(conv: WanCausalConv3d) -> None:
    # diffusers keeps the padding as F.pad's (w, w, h, h, 2t, 0) and the convolution's as zero.
    width, _, height, _, time, _ = conv._padding
    conv.padding = (0, height, width)
    conv.forward = types.MethodType(_causal_forward, conv)


def _causal_forward(self: Any, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """``WanCausalConv3d.forward`` with the spatial padding left to oneDNN (see the module's doc)."""
    front = self._padding[4]
    if cache_x is not None and front > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)
        front -= cache_x.shape[2]
    if front > 0:
        x = F.pad(x, (0, 0, 0, 0, front, 0))
    return torch.ops.aten.mkldnn_convolution(
        x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
    )
