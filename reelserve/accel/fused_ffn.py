"""The transformer's feed-forward on the CPU as two oneDNN matrix products, the GELU fused into the
first.

Every Wan block ends in diffusers' ``FeedForward``: a linear layer up to ``ffn_dim``, the tanh GELU,
and a linear layer back. On the CPU in float32 torch runs each linear layer as MKL's ``addmm`` on
the weights as stored and the GELU as a pass of its own over the widest activation of the block.
oneDNN's matrix product on weights reordered once into its blocked layout (what inductor's
freezing uses) is faster at these shapes, and it applies the GELU to each tile of the result while
the tile is in cache. On the micro model (a batch-8 forward: 640 tokens x 192 -> 576 -> 192), one
thread: 2.0 ms -> 1.5 ms for the product up with its GELU, 1.56 -> 1.30 ms for the product down; a
batch of four micro clips 2.04 s -> 1.93 s (each CPU lane runs one thread; at two threads the
batch measured the same either way).

It rounds differently from MKL and ATen's GELU: up to 1.4e-5 on micro's [0, 1] pixels (tested), of
the order of CFG batching's. Only float32 CPU weights in diffusers' own layout are rerouted (one
``proj`` linear in a tanh GELU, a dropout, a linear); anything else (int8, half precision, a GPU,
another activation) runs as before, and ``fuse_feed_forwards`` says how many it took.
"""

from __future__ import annotations

import torch
from diffusers.models.activations import GELU
from diffusers.models.attention import FeedForward


class FusedFeedForward:
    """Installed as a ``FeedForward``'s ``forward``: what the module computes in eval mode (its dropout
    is a no-op there), on oneDNN. The module and its weights stay where they were (state dicts,
    fingerprints and ``.to()`` see no change); the reordered copies live here."""

    def __init__(self, original: FeedForward) -> None:
        up, down = original.net[0].proj, original.net[2]
        # Copies in oneDNN's layout: the FFN's weights twice in memory (0.9 MB on micro).
        self.up_weight = torch.ops.mkldnn._reorder_linear_weight(up.weight.detach(), None)
        self.down_weight = torch.ops.mkldnn._reorder_linear_weight(down.weight.detach(), None)
        self.up_bias = up.bias.detach() if up.bias is not None else None
        self.down_bias = down.bias.detach() if down.bias is not None else None
        self.out_features = down.out_features

    def __call__(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        leading = hidden_states.shape[:-1]
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        inner = torch.ops.mkldnn._linear_pointwise(rows, self.up_weight, self.up_bias, "gelu", [], "tanh")
        out = torch.ops.mkldnn._linear_pointwise(inner, self.down_weight, self.down_bias, "none", [], "")
        return out.reshape(*leading, self.out_features)


def fusable(module: torch.nn.Module) -> bool:
    """A diffusers ``FeedForward`` of exactly tanh-GELU linear, dropout, linear, in float32 on the CPU."""
    if not isinstance(module, FeedForward) or len(module.net) != 3:
        return False
    act, dropout, down = module.net
    if not (isinstance(act, GELU) and act.approximate == "tanh" and isinstance(dropout, torch.nn.Dropout)):
        return False
    # Exactly Linear: a quantized or adapter-wrapped layer computes something else.
    if type(act.proj) is not torch.nn.Linear or type(down) is not torch.nn.Linear:
        return False
    weights = (act.proj.weight, down.weight)
    return all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights)


def fuse_feed_forwards(transformer: torch.nn.Module) -> int:
    """Run every fusable feed-forward under ``transformer`` as a ``FusedFeedForward``; returns how
    many (none where oneDNN is not built in). Installing twice changes nothing more."""
    if not torch.backends.mkldnn.is_available():
        return 0
    fused = 0
    for module in transformer.modules():
        if fusable(module) and not isinstance(vars(module).get("forward"), FusedFeedForward):
            module.forward = FusedFeedForward(module)
            fused += 1
    return fused


def unfuse_feed_forwards(transformer: torch.nn.Module) -> None:
    """Put the modules' own ``forward`` back."""
    for module in transformer.modules():
        if isinstance(vars(module).get("forward"), FusedFeedForward):
            del module.forward
