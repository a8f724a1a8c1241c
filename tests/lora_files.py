"""LoRA files for tests: random (non-zero) low-rank pairs in diffusers' format for the tiny model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from reelserve.models.lora import linear_shapes
from reelserve.models.tiny import build_tiny_pipeline

TARGETS = ("attn1.to_q", "attn1.to_v", "attn2.to_k", "ffn.net.0.proj", "ffn.net.2")


def lora_file(path: Path, seed: int, rank: int = 4, widen: int = 0) -> bytes:
    """A diffusers-format LoRA for the tiny transformer (``widen`` > 0: a layer too wide for it, as a
    LoRA for another model would be); written to ``path``, its bytes returned."""
    shapes = linear_shapes(build_tiny_pipeline(0).transformer)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (in_features, out_features) in shapes.items():
        if name.startswith("blocks.") and name.endswith(TARGETS):
            tensors[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, in_features + widen, generator=generator) * 0.3
            tensors[f"transformer.{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.3
    save_file(tensors, str(path))
    return path.read_bytes()
