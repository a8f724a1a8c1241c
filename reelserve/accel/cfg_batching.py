"""Classifier-free guidance in one forward pass instead of two.

The denoising step (``WanFamily.denoise_step``, as ``WanPipeline``'s loop) calls its transformer
twice: with the prompt ("cond"), then with the negative prompt ("uncond"), on the same latents and
timestep. Batched, the two passes share every weight read and launch, which is most of a small
batch's cost.

The loop is left alone; the transformer's ``forward`` is wrapped. The caller ``prime``s it with
the negative embeddings of the rows about to be evaluated (the runner: the batch, then the rows
left after any leave). On the cond call the wrapper runs
``[cond; uncond]`` as one batch, returns the cond half and keeps the uncond half. The uncond call
gets the kept half only if it is for the very same latents and timestep objects and its embeddings
equal the primed ones; anything else runs as the pipeline asked. So a wrong prime costs time,
never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Kept:
    hidden_states: torch.Tensor
    timestep: torch.Tensor
    negative: torch.Tensor
    output: Any


class CfgBatching:
    """Wraps one transformer's ``forward``. ``batched`` counts merged passes, ``missed`` uncond
    passes that had to run on their own (no prime, or a prime that did not match)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self._inner = transformer.forward
        self._negative: torch.Tensor | None = None
        self._kept: _Kept | None = None
        self.batched = 0
        self.missed = 0
        transformer.forward = self._forward

    def prime(self, negative: torch.Tensor | None) -> None:
        """The negative embeddings the next uncond passes will use (None: stop batching)."""
        self._kept = None
        if negative is None:
            self._negative = None
            return
        self._negative = negative

    def remove(self) -> None:
        self.transformer.forward = self._inner
        self._negative = self._kept = None

    def _forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 *args: Any, **kwargs: Any) -> Any:
        kept, self._kept = self._kept, None
        if kept is not None and kept.hidden_states is hidden_states and kept.timestep is timestep:
            if _same(kept.negative, encoder_hidden_states):
                return kept.output
            self.missed += 1
            return self._inner(hidden_states, timestep, encoder_hidden_states, *args, **kwargs)
        negative = self._negative
        if negative is None or negative.shape != encoder_hidden_states.shape:
            return self._inner(hidden_states, timestep, encoder_hidden_states, *args, **kwargs)
        # The prompt's device and dtype: the transformer's own (the first parameter's is not always
        # that: models keep some modules in float32, which Wan's lists first).
        negative = negative.to(encoder_hidden_states.device, encoder_hidden_states.dtype)
        both = self._inner(
            torch.cat([hidden_states, hidden_states]),
            torch.cat([timestep, timestep]),
            torch.cat([encoder_hidden_states, negative]),
            *args,
            **kwargs,
        )
        cond, uncond = _split(both, hidden_states.shape[0])
        self._kept = _Kept(hidden_states, timestep, negative, uncond)
        self.batched += 1
        return cond


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.to(a.device)))


def _split(output: Any, rows: int) -> tuple[Any, Any]:
    """Halve a transformer output (a tuple, or an output object with ``sample``) along the batch."""
    if isinstance(output, tuple):
        halves = [(t[:rows], t[rows:]) if torch.is_tensor(t) else (t, t) for t in output]
        return tuple(h[0] for h in halves), tuple(h[1] for h in halves)
    sample = output.sample
    return type(output)(sample=sample[:rows]), type(output)(sample=sample[rows:])


def find_cfg_batching(pipeline: Any) -> list[CfgBatching]:
    """The wrappers installed on a pipeline's transformers (both experts for A14B)."""
    found = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipeline, name, None)
        forward = getattr(module, "forward", None)
        owner = getattr(forward, "__self__", None)
        if isinstance(owner, CfgBatching):
            found.append(owner)
    return found


def prime_pipeline(pipeline: Any, negative: torch.Tensor | None) -> None:
    """Prime every CFG-batching transformer of ``pipeline``; a no-op without any."""
    for wrapper in find_cfg_batching(pipeline):
        wrapper.prime(negative)
