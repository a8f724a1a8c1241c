"""The Wan family on a parallel worker: rank 0 keeps every row (latents, schedulers, steps, previews,
joins and parks, as on one device) and hands each transformer evaluation and each decode of two rows or
more (or of tiles) to its process group (``ParallelRanks``). What rank 0 computes from their results is what one
process computes, so the engine above it does not change."""

from __future__ import annotations

from typing import Any

import torch

from reelserve.models.family import Row
from reelserve.models.lora import LoraBank
from reelserve.models.wan_family import Encode, WanFamily
from reelserve.parallel.commands import forward_call
from reelserve.parallel.ranks import ParallelRanks


class ParallelWanFamily(WanFamily):
    def __init__(self, pipeline: Any, max_sequence_length: int, ranks: ParallelRanks, encode: Encode | None = None,
                 adapters: LoraBank | None = None) -> None:
        super().__init__(pipeline, max_sequence_length, encode=encode, adapters=adapters)
        self.ranks = ranks

    def _guided(self, model: Any, rows: list[Row], latents: torch.Tensor, timestep: torch.Tensor,
                context: dict[str, Any], dtype: torch.dtype, high_noise: bool) -> torch.Tensor:
        tensors = {"latents": latents.contiguous(), "timestep": timestep.contiguous(),
                   "prompts": torch.cat([row.prompt_embeds for row in rows]).to(dtype)}
        guided = rows[0].negative_embeds is not None
        if guided:
            tensors["negatives"] = torch.cat([row.negative_embeds for row in rows]).to(dtype)  # type: ignore[misc]
        expert = "transformer" if model is self.pipeline.transformer else "transformer_2"
        adapters = tuple(tuple((ref.sha256, ref.scale) for ref in row.params.loras) for row in rows)
        call = forward_call(expert, tensors, context, float(rows[0].timestep), adapters if any(adapters) else ())
        out = self.ranks.forward(call, tensors)
        return self._mix(rows, out["cond"], out["uncond"], high_noise) if guided else out["cond"]

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Two rows or more, or a video the VAE decodes in tiles: each rank decodes its share."""
        if not self.ranks.state.decoder.shared(tuple(latents.shape)):
            return super()._decode_latents(latents)
        return self.ranks.decode(latents.contiguous())
