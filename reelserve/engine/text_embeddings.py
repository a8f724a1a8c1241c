"""Text-encoder outputs kept per prompt, so a prompt seen before is not encoded again.

Wan's UMT5-XXL text encoder costs real time per prompt, and prompts repeat (the default negative
prompt "" most of all). ``encode_prompts`` encodes each distinct prompt on its own, as a batch of
one, whether or not a cache is given: an embedding then never depends on which prompts shared its
batch (padding and batched BLAS paths can change bits), so a cached run and an uncached run are
bit-identical by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from cachetools import LRUCache

LookupListener = Callable[[bool], None]  # called with True for a hit, False for a miss


@dataclass(frozen=True)
class TextEmbeddingKey:
    """The exact prompt text (not a normalised one: the encoder is what decides what is equal),
    and everything else that changes the tensor the pipeline gets."""

    prompt: str
    max_sequence_length: int
    dtype: torch.dtype
    device: torch.device


class _EvictionCountingLRU(LRUCache[TextEmbeddingKey, torch.Tensor]):
    def __init__(self, max_bytes: int, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=lambda t: t.nbytes)
        self._on_evict = on_evict

    def popitem(self) -> tuple[TextEmbeddingKey, torch.Tensor]:
        # cachetools calls popitem to make room, so every call here is an eviction.
        item = super().popitem()
        self._on_evict()
        return item


class TextEmbeddingCache:
    """An LRU of prompt -> text-encoder output, bounded by ``max_entries`` and by ``max_bytes`` of
    tensor data, whichever binds first. ``max_entries == 0`` keeps nothing (every lookup misses).

    Safe to share between threads. ``hits``, ``misses`` and ``evictions`` are running counts;
    ``on_lookup`` (if given) is told of each lookup, e.g. to feed a metric.
    """

    def __init__(
        self, max_entries: int = 1024, max_bytes: int = 256 * 2**20, on_lookup: LookupListener | None = None
    ) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._on_lookup = on_lookup
        self._lock = threading.Lock()
        self._entries = _EvictionCountingLRU(max_bytes, self._count_eviction)

    def _count_eviction(self) -> None:
        self.evictions += 1  # only ever called with self._lock held

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held."""
        return int(self._entries.currsize)

    def get(self, key: TextEmbeddingKey) -> torch.Tensor | None:
        """The embeddings stored for ``key``, shape ``(1, key.max_sequence_length, dim)``, as a new
        tensor the caller may keep; None on a miss."""
        with self._lock:
            stored = self._entries.get(key)
            if stored is None:
                self.misses += 1
            else:
                self.hits += 1
        if self._on_lookup is not None:
            self._on_lookup(stored is not None)
        return None if stored is None else _pad(stored, key.max_sequence_length)

    def put(self, key: TextEmbeddingKey, embeds: torch.Tensor) -> None:
        """Keep ``embeds`` (shape ``(1, key.max_sequence_length, dim)``) for ``key``. An entry larger
        than ``max_bytes`` on its own is not kept."""
        trimmed = _trim(embeds.detach())
        if self.max_entries == 0 or trimmed.nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = trimmed
            while len(self._entries) > self.max_entries:
                self._entries.popitem()


def _trim(embeds: torch.Tensor) -> torch.Tensor:
    """Drop the trailing token rows whose every bit is zero (Wan pads each prompt with zeros up to
    max_sequence_length): a 512-token slot with a 40-token prompt then holds 40 rows, not 512.
    Bits, not values, are compared, so a row of -0.0 stays and ``_pad`` restores the exact tensor."""
    nonzero_rows = embeds[0].contiguous().view(torch.uint8).ne(0).any(dim=-1).nonzero()
    length = int(nonzero_rows[-1]) + 1 if len(nonzero_rows) else 0
    return embeds[:, :length].clone()  # clone: a slice would keep the whole padded storage alive


def _pad(stored: torch.Tensor, max_sequence_length: int) -> torch.Tensor:
    missing = max_sequence_length - stored.shape[1]
    return torch.cat([stored, stored.new_zeros(1, missing, stored.shape[2])], dim=1)


@torch.inference_mode()
def encode_prompts(
    pipeline: Any, prompts: Sequence[str], max_sequence_length: int, cache: TextEmbeddingCache | None = None
) -> torch.Tensor:
    """Embeddings for ``prompts`` (one row each, in order) from ``pipeline.encode_prompt``, on the
    pipeline's execution device in the text encoder's dtype, as the pipeline would make them.

    Each distinct prompt is looked up once and, if missing, encoded alone. With ``cache`` None the
    encoding is the same, only nothing is kept.
    """
    device = pipeline._execution_device
    dtype = pipeline.text_encoder.dtype
    rows: dict[str, torch.Tensor] = {}
    for prompt in dict.fromkeys(prompts):
        key = TextEmbeddingKey(prompt, max_sequence_length, dtype, device)
        row = cache.get(key) if cache is not None else None
        if row is None:
            # CFG off: encode_prompt then encodes exactly the one prompt it is given, no negative.
            row, _ = pipeline.encode_prompt(
                prompt=[prompt],
                do_classifier_free_guidance=False,
                max_sequence_length=max_sequence_length,
                device=device,
                dtype=dtype,
            )
            if cache is not None:
                cache.put(key, row)
        rows[prompt] = row
    return torch.cat([rows[prompt] for prompt in prompts])
