"""A Wan transformer with its tokens split across ranks (what diffusers' ``_cp_plan`` for the Wan
transformer describes, in plain module hooks): the whole sequence's length is noted at the call, the
per-token timesteps (Wan2.2 TI2V), the rotary tables and the first block's input are cut to this rank's
chunk, every block's self-attention exchanges across ranks, and the output projection's result is
gathered whole again, so the model's own unpatchify sees every token.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from reelserve.parallel.attention import SequenceParallelAttention, SequenceShards


def shard_transformer(transformer: Any, shards: SequenceShards) -> None:
    """Install the split on ``transformer`` in place; a no-op for a layout without a sequence split."""
    if shards.layout.sequence == 1:
        return
    patch = transformer.config.patch_size

    def at_call(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        _, _, frames, height, width = hidden.shape
        shards.length = (frames // patch[0]) * (height // patch[1]) * (width // patch[2])
        timestep = kwargs.get("timestep")
        if timestep is not None and timestep.ndim == 2:  # one timestep per token (expand_timesteps)
            kwargs = {**kwargs, "timestep": shards.local(timestep, 1)}
        return args, kwargs

    def rope_out(module: Any, args: tuple, output: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(shards.local(x, 1) for x in output)

    def first_block_in(module: Any, args: tuple) -> tuple:
        return (shards.local(args[0], 1), *args[1:])

    def gathered(module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return gather_tokens(output, shards)

    transformer.register_forward_pre_hook(at_call, with_kwargs=True)
    transformer.rope.register_forward_hook(rope_out)
    transformer.blocks[0].register_forward_pre_hook(first_block_in)
    transformer.proj_out.register_forward_hook(gathered)
    for block in transformer.blocks:
        block.attn1.set_processor(SequenceParallelAttention(block.attn1.processor, shards))


@torch.compiler.disable
def gather_tokens(x: torch.Tensor, shards: SequenceShards) -> torch.Tensor:
    """Every rank's chunk of (B, L_local, D), in order: the whole (B, L, D) on every rank of the group."""
    sizes = shards.sizes()
    longest = max(sizes)
    padded = x if x.shape[1] == longest else torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[1]))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=shards.sequence_group)
    return torch.cat([part[:, :n] for part, n in zip(parts, sizes, strict=True)], dim=1)
