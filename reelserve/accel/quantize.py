"""int8 weights for the transformer's linear layers; the VAE and text encoder keep their precision.

On CPU this is PyTorch's dynamic quantization: int8 weights, activations quantized per batch, int8
GEMMs through fbgemm/onednn. On CUDA it is torchao's int8 weight-only quantization, which must be
installed (it is not a dependency: a CPU install does not need it).
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

from reelserve.schemas.errors import invalid


def check_quantization(device: torch.device) -> None:
    """Fail before loading when int8 cannot run on ``device``."""
    if device.type == "cuda" and importlib.util.find_spec("torchao") is None:
        raise invalid("quantization", "quantization 'int8' on CUDA needs torchao: pip install torchao")
    if device.type not in ("cpu", "cuda"):
        raise invalid("quantization", f"quantization 'int8' runs on cpu or cuda, not {device.type}")


# On CPU the cross-attention's key and value projections stay in float: they read the text states,
# whose entries span two orders of magnitude (on micro, most near 0.02, a few near 2.4), and
# activations quantized per tensor round the small ones to zero (131 % error on micro's values).
# Weight-only int8 (CUDA) leaves activations alone and quantizes them too.
TEXT_PROJECTIONS = ("attn2.to_k", "attn2.to_v")


def quantize_int8(transformer: torch.nn.Module, device: torch.device) -> int:
    """Quantize the ``nn.Linear`` layers in ``transformer``'s blocks in place; return how many.

    Only the blocks: they hold nearly all the weights and FLOPs, and the embedders around them
    read their own parameters' dtype (an all-int8 time embedder has none left to read)."""
    blocks = transformer.blocks
    before = sum(isinstance(m, torch.nn.Linear) for m in blocks.modules())
    if device.type == "cuda":
        from torchao.quantization import int8_weight_only, quantize_

        quantize_(blocks, int8_weight_only())
        return before
    with warnings.catch_warnings():
        # torch.ao's quantized modules are deprecated in favour of torchao, which has no CPU dynamic path.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        _replace_linears(blocks)
    return before - sum(isinstance(m, torch.nn.Linear) for m in blocks.modules())


def _replace_linears(module: torch.nn.Module, prefix: str = "") -> None:
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(child) is torch.nn.Linear and not path.endswith(TEXT_PROJECTIONS):
            quantized = torch.ao.nn.quantized.dynamic.Linear.from_float(_with_qconfig(child))
            setattr(module, name, quantized)
        else:
            _replace_linears(child, path)


def _with_qconfig(linear: torch.nn.Linear) -> torch.nn.Linear:
    linear.qconfig = torch.ao.quantization.default_dynamic_qconfig
    return linear
