"""Regional compilation: ``torch.compile`` of the repeated transformer blocks only.

Compiling the one block class that repeats (``WanTransformerBlock``) costs one compile per input
shape instead of one per model, and gives most of a whole-model compile's speed. Every new batch
shape recompiles, so the server warms up each shape it will batch before taking jobs, and caps
recompiles: past ``RECOMPILE_LIMIT`` graphs per block, dynamo runs that shape eagerly instead of
compiling without end.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

RECOMPILE_LIMIT = 16  # graphs per compiled block: batch sizes x clip shapes a server warms up


def compile_blocks(transformer: torch.nn.Module, fullgraph: bool = True) -> None:
    """Compile ``transformer``'s repeated blocks in place (lazily: on their first call).

    ``fullgraph`` fails loudly on a graph break instead of silently running pieces eagerly; step
    caches wrap blocks in Python hooks, so with one on, breaks are expected and allowed."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    transformer.compile_repeated_blocks(fullgraph=fullgraph)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far: a rise after warm-up is a recompile on
    the serving path."""
    return int(counters["stats"]["unique_graphs"])


def is_compiled(transformer: Any) -> bool:
    return any(getattr(block, "_compiled_call_impl", None) is not None for block in getattr(transformer, "blocks", ()))
