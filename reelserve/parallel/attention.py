"""Self-attention over a sequence split across ranks: Ulysses (an all-to-all turns each rank's share of
the tokens, all heads, into all the tokens, a share of the heads) and the ring (each rank keeps its
queries and passes its keys and values on, merging partial results by their log-sum-exp). Both exact:
the same attention as one process computes, up to float rounding.

Own code, not diffusers' context parallelism (``enable_parallelism``): that resolves a rank's device as
``rank % torch.accelerator.device_count()``, which has no answer on a CPU (gloo), its ring needs an
attention kernel that returns the log-sum-exp (diffusers' native one does not), and it can be applied
to a model once, while a worker whose rank died must build its process group again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import _get_qkv_projections

from reelserve.parallel.layout import ParallelLayout, chunk_sizes


@dataclass
class SequenceShards:
    """One rank's place in the sequence split, and the length of the evaluation in flight (set by the
    model's hooks, ``parallel/sharding.py``, at every call)."""

    layout: ParallelLayout
    ulysses_index: int
    ring_index: int
    ulysses_group: Any = None  # a ProcessGroup; None when its degree is 1
    ring_group: Any = None
    ring_ranks: list[int] = field(default_factory=list)  # global ranks of the ring, by ring index
    sequence_group: Any = None
    length: int = 0  # tokens of the whole sequence in the call in flight

    @property
    def index(self) -> int:
        """This rank's chunk of the sequence."""
        return self.ulysses_index * self.layout.ring + self.ring_index

    def sizes(self) -> list[int]:
        return chunk_sizes(self.length, self.layout.sequence)

    def local(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's chunk of ``x`` along ``dim`` (the whole sequence's tokens)."""
        return torch.tensor_split(x, self.layout.sequence, dim=dim)[self.index]

    def ulysses_sizes(self) -> list[int]:
        """Chunk lengths of this rank's Ulysses group (same ring index), by Ulysses index."""
        sizes = self.sizes()
        return [sizes[u * self.layout.ring + self.ring_index] for u in range(self.layout.ulysses)]

    def ring_kv_sizes(self) -> list[int]:
        """Tokens each ring member holds after the Ulysses exchange, by ring index."""
        sizes, ring = self.sizes(), self.layout.ring
        return [sum(sizes[u * ring + r] for u in range(self.layout.ulysses)) for r in range(ring)]


@torch.compiler.disable
def sequence_attention(shards: SequenceShards, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       backend: Any = None) -> torch.Tensor:
    """Attention of this rank's queries over every rank's keys and values; (B, L_local, H, D) in and out."""
    ulysses = shards.layout.ulysses > 1
    if ulysses:
        sizes = shards.ulysses_sizes()
        query, key, value = (_heads_to_tokens(x, sizes, shards.ulysses_group) for x in (query, key, value))
    if shards.layout.ring > 1:
        out = _ring_attention(shards, query, key, value)
    else:
        out = dispatch_attention_fn(query, key, value, dropout_p=0.0, is_causal=False, backend=backend)
    if ulysses:
        out = _tokens_to_heads(out, shards.ulysses_sizes(), shards.ulysses_index, shards.ulysses_group)
    return out


def _heads_to_tokens(x: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """(B, L_mine, H, D), all heads of my tokens → (B, sum(sizes), H/U, D): every rank's tokens, my heads."""
    degree = len(sizes)
    batch, length, heads, dim = x.shape
    share = heads // degree
    send = x.reshape(batch, length, degree, share, dim).permute(2, 0, 1, 3, 4).contiguous()
    per_token = batch * share * dim
    received = x.new_empty(sum(sizes) * per_token)
    dist.all_to_all_single(received, send.flatten(), [n * per_token for n in sizes], [length * per_token] * degree,
                           group=group)
    parts = received.split([n * per_token for n in sizes])
    return torch.cat([part.view(batch, n, share, dim) for part, n in zip(parts, sizes, strict=True)], dim=1)


def _tokens_to_heads(x: torch.Tensor, sizes: list[int], mine: int, group: Any) -> torch.Tensor:
    """The inverse of ``_heads_to_tokens``: (B, sum(sizes), H/U, D) → (B, sizes[mine], H, D)."""
    degree = len(sizes)
    batch, _, share, dim = x.shape
    per_token = batch * share * dim
    send = torch.cat([chunk.contiguous().flatten() for chunk in x.split(sizes, dim=1)])
    length = sizes[mine]
    received = x.new_empty(degree * length * per_token)
    dist.all_to_all_single(received, send, [length * per_token] * degree, [n * per_token for n in sizes],
                           group=group)
    return received.view(degree, batch, length, share, dim).permute(1, 2, 0, 3, 4).reshape(
        batch, length, degree * share, dim)


def _ring_attention(shards: SequenceShards, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor) -> torch.Tensor:
    """Each step attends to the key/value chunk in hand while the next one arrives from the previous
    rank; partial outputs merge exactly by their log-sum-exp (in float32)."""
    ring, me, ranks = shards.layout.ring, shards.ring_index, shards.ring_ranks
    kv_sizes = shards.ring_kv_sizes()
    batch, _, heads, dim = key.shape
    held = torch.cat([key.flatten(), value.flatten()])
    out = lse = None
    for step in range(ring):
        source = (me - step) % ring  # whose keys and values are in hand
        pending, incoming = None, None
        if step < ring - 1:
            incoming = held.new_empty(2 * batch * kv_sizes[(source - 1) % ring] * heads * dim)
            pending = dist.batch_isend_irecv([
                dist.P2POp(dist.isend, held, ranks[(me + 1) % ring], group=shards.ring_group),
                dist.P2POp(dist.irecv, incoming, ranks[(me - 1) % ring], group=shards.ring_group),
            ])
        k, v = held.split(held.numel() // 2)
        shape = (batch, kv_sizes[source], heads, dim)
        part, part_lse = attention_with_lse(query, k.view(shape), v.view(shape))
        if out is None:
            out, lse = part, part_lse
        else:
            out = out - torch.sigmoid(part_lse - lse) * (out - part)
            lse = lse - torch.nn.functional.logsigmoid(lse - part_lse)
        if pending is not None:
            for work in pending:
                work.wait()
            held = incoming
    assert out is not None
    return out.to(query.dtype)


def attention_with_lse(query: torch.Tensor, key: torch.Tensor,
                       value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp, (B, L, H, D) in; out (B, L, H, D) and lse (B, L, H, 1),
    both float32, from the fused kernels that return it (no L×L matrix in memory)."""
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
        lse = lse[..., : q.shape[2]]  # the kernel pads it to its block size
    return out.transpose(1, 2).float(), lse.transpose(1, 2).unsqueeze(-1).float()


class SequenceParallelAttention:
    """The processor of a Wan block's self-attention (``attn1``) under a sequence split: projections,
    norms and rotary embedding on this rank's tokens, as ``WanAttnProcessor`` does them, then
    ``sequence_attention`` across ranks. Cross-attention keeps its own processor (each rank's queries
    attend to the whole prompt, which every rank has)."""

    def __init__(self, inner: Any, shards: SequenceShards) -> None:
        self.inner, self.shards = inner, shards

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if encoder_hidden_states is not None or attn.add_k_proj is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotary(query, *rotary_emb), _rotary(key, *rotary_emb)
        out = sequence_attention(self.shards, query, key, value, backend=self.inner._attention_backend)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``WanAttnProcessor``'s rotary embedding, as it applies it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)
