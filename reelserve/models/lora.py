"""LoRA adapters, unmerged and per row: every linear layer an adapter may touch computes
``base(x) + Σ scale · B(A x)`` for each row of the call with its own adapters, gathered per row and
batched by adapter (as S-LoRA and Punica serve language models), so rows with different adapter sets
share one transformer call and a row without adapters gets exactly the base layer's output.

``read_lora`` turns a safetensors file in diffusers/PEFT format, or a Wan community format that
diffusers' own converter reads (``WanPipeline.lora_state_dict``), into per-module ``(A, B)`` pairs
with the PEFT scaling (``lora_alpha / r``) folded into B. ``MultiLoraLinear`` replaces each
``nn.Linear`` of the transformer once, at load; ``LoraBank`` holds the adapters on the device (an LRU
bounded by count and bytes) and says, for the call in flight, which rows use which adapters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from cachetools import LRUCache
from safetensors.torch import load as load_safetensors

_PREFIX = "transformer."


class LoraFormatError(ValueError):
    """The file is no LoRA this model can take (the message says why, for the caller)."""


@dataclass(frozen=True)
class LoraWeights:
    """One adapter's low-rank pairs by transformer module name: ``A`` (r, in), ``B`` (out, r)."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.pairs.values())

    def to(self, device: torch.device, dtype: torch.dtype) -> LoraWeights:
        return LoraWeights({name: (a.to(device, dtype), b.to(device, dtype)) for name, (a, b) in self.pairs.items()})


def read_lora(data: bytes) -> LoraWeights:
    """The adapter in ``data``, a safetensors file's bytes (never a pickle: a stored file is data)."""
    from diffusers import WanPipeline

    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own errors for a bad header or a truncated body
        raise LoraFormatError(f"not a readable safetensors file ({exc})") from None
    try:
        state = WanPipeline.lora_state_dict(dict(tensors))
    except Exception as exc:  # noqa: BLE001 - diffusers' converters raise many kinds for a foreign layout
        raise LoraFormatError(f"not a Wan LoRA diffusers can read ({type(exc).__name__}: {exc})") from None
    scaling = _peft_scaling(data)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if not key.startswith(_PREFIX):
            raise LoraFormatError(f"'{key}' is not a transformer weight; only the transformer takes adapters here")
        module, _, kind = key[len(_PREFIX):].rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise LoraFormatError(f"'{key}' is not a low-rank pair (lora_A/lora_B); full-weight diffs are not taken")
        pairs.setdefault(module, {})[kind[0]] = tensor
    if not pairs:
        raise LoraFormatError("the file holds no LoRA weights")
    weights = {}
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"} or pair["A"].dim() != 2 or pair["B"].shape[1] != pair["A"].shape[0]:
            raise LoraFormatError(f"'{module}': lora_A and lora_B must be a matching pair of matrices")
        weights[module] = (pair["A"].float(), pair["B"].float() * scaling)
    return LoraWeights(weights)


def _peft_scaling(data: bytes) -> float:
    """``lora_alpha / r`` from diffusers' adapter metadata in the file's header (1 without it, as PEFT's
    default alpha is r). Community formats have their alpha folded in by diffusers' converter."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size]) if 8 + size <= len(data) else {}
    metadata = header.get("__metadata__", {}).get("lora_adapter_metadata")
    if not metadata:
        return 1.0
    config = json.loads(metadata)
    config = config.get("transformer", config)
    rank, alpha = config.get("r"), config.get("lora_alpha")
    return float(alpha) / float(rank) if rank and alpha else 1.0


def check_fits(weights: LoraWeights, shapes: dict[str, tuple[int, int]]) -> None:
    """Raise ``LoraFormatError`` unless every pair fits a linear layer of the model: ``shapes`` maps
    each of its module names to (in_features, out_features)."""
    for module, (a, b) in weights.pairs.items():
        if module not in shapes:
            raise LoraFormatError(f"'{module}' is no linear layer of this model (a LoRA for another model?)")
        in_features, out_features = shapes[module]
        if a.shape[1] != in_features or b.shape[0] != out_features:
            raise LoraFormatError(f"'{module}' takes {in_features} -> {out_features}; the adapter's pair is "
                                  f"{a.shape[1]} -> {b.shape[0]} (a LoRA for another model?)")


def linear_shapes(transformer: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Every linear layer of ``transformer`` by module name: (in_features, out_features)."""
    shapes = {}
    for name, module in transformer.named_modules():
        base = module.base if isinstance(module, MultiLoraLinear) else module
        if isinstance(base, torch.nn.Linear) and not name.endswith(".base"):
            shapes[name] = (base.in_features, base.out_features)
    return shapes


RowAdapters = tuple[tuple[str, float], ...]  # one row's (adapter id, scale) pairs


class LoraBank:
    """The adapters on one device, and which rows of the call in flight use which.

    :param load: an adapter's weights by id (its content hash), read when it is first needed.
    :param max_adapters: adapters kept at once; :param max_bytes: their bytes at most."""

    def __init__(self, load: Callable[[str], LoraWeights], device: torch.device, dtype: torch.dtype,
                 max_adapters: int = 16, max_bytes: int = 256 * 2**20,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.load, self.device, self.dtype = load, device, dtype
        self.max_bytes = max_bytes
        self._kept: LRUCache[str, LoraWeights] = LRUCache(max_adapters)
        self._lock = threading.Lock()  # lanes share the bank
        self.on_event = on_event or (lambda event: None)  # "load", "hit", "evict": the metrics
        self._local = threading.local()  # each lane's thread has its own call in flight

    def weights(self, adapter: str) -> LoraWeights:
        """The adapter on the device, loaded (and older ones evicted) if it is not there."""
        with self._lock:
            kept = self._kept.get(adapter)
        if kept is not None:
            self.on_event("hit")
            return kept
        weights = self.load(adapter).to(self.device, self.dtype)
        self.on_event("load")
        with self._lock:
            self._kept[adapter] = weights
            while len(self._kept) > 1 and sum(w.nbytes for w in self._kept.values()) > self.max_bytes:
                self._kept.popitem()  # the least recently used
                self.on_event("evict")
        return weights

    def prefetch(self, adapters: list[str]) -> None:
        for adapter in adapters:
            self.weights(adapter)

    @contextmanager
    def rows(self, rows: list[RowAdapters]) -> Iterator[None]:
        """For the transformer calls inside: row i of the call (of every copy of the rows the call
        stacks, as CFG batching stacks cond and uncond) uses ``rows[i]``."""
        plan = _Plan.of(rows, self) if any(rows) else None
        previous = getattr(self._local, "plan", None)
        self._local.plan = plan
        try:
            yield
        finally:
            self._local.plan = previous

    @property
    def plan(self) -> _Plan | None:
        return getattr(self._local, "plan", None)


@dataclass(frozen=True)
class _Plan:
    """The call's adapters: for each, the rows that use it and their scales."""

    rows: int
    groups: tuple[tuple[LoraWeights, torch.Tensor, torch.Tensor], ...]  # (weights, row indices, scales)

    @classmethod
    def of(cls, rows: list[RowAdapters], bank: LoraBank) -> _Plan:
        by_adapter: dict[str, list[tuple[int, float]]] = {}
        for i, adapters in enumerate(rows):
            for adapter, scale in adapters:
                by_adapter.setdefault(adapter, []).append((i, scale))
        groups = []
        for adapter, uses in by_adapter.items():
            index = torch.tensor([i for i, _ in uses], device=bank.device)
            scales = torch.tensor([s for _, s in uses], device=bank.device, dtype=bank.dtype)
            groups.append((bank.weights(adapter), index, scales))
        return cls(len(rows), tuple(groups))

    stacked: dict[int, tuple[tuple[LoraWeights, torch.Tensor, torch.Tensor], ...]] = field(
        default_factory=dict, compare=False)  # by call size: worked out once per call, not per layer

    def for_batch(self, batch: int) -> tuple[tuple[LoraWeights, torch.Tensor, torch.Tensor], ...]:
        """Each adapter's rows in a call of ``batch`` rows: the plan's rows, repeated as the call stacks them."""
        if batch not in self.stacked:
            copies = batch // self.rows
            self.stacked[batch] = self.groups if copies == 1 else tuple(
                (weights, index.repeat(copies) + torch.arange(copies, device=index.device)
                 .repeat_interleave(len(index)) * self.rows, scales.repeat(copies))
                for weights, index, scales in self.groups)
        return self.stacked[batch]


class MultiLoraLinear(torch.nn.Module):
    """A linear layer of the transformer with the call's adapters applied per row, unmerged."""

    def __init__(self, base: torch.nn.Linear, name: str, bank: LoraBank) -> None:
        super().__init__()
        self.base, self.name, self.bank = base, name, bank

    @property
    def weight(self) -> torch.Tensor:  # what code that reads a linear layer's weight expects
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        plan = self.bank.plan
        if plan is None or x.shape[0] % plan.rows:
            return out
        for weights, index, scales in plan.for_batch(x.shape[0]):
            pair = weights.pairs.get(self.name)
            if pair is None:
                continue
            a, b = pair
            delta = (x.index_select(0, index).to(a.dtype) @ a.T) @ b.T
            delta = delta * scales.view(-1, *([1] * (delta.dim() - 1)))
            out = out.index_add(0, index, delta.to(out.dtype))
        return out


def install(transformer: torch.nn.Module, bank: LoraBank) -> int:
    """Every ``nn.Linear`` of ``transformer`` becomes a ``MultiLoraLinear`` over the same module (weights,
    state dict names under ``.base``); returns how many. Install before the accelerations, which then
    see these layers as they are (the fused feed-forward leaves them alone)."""
    targets = [(name, module) for name, module in transformer.named_modules() if type(module) is torch.nn.Linear]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent: Any = transformer.get_submodule(parent_name) if parent_name else transformer
        setattr(parent, child, MultiLoraLinear(module, name, bank))
    return len(targets)
