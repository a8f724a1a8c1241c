"""A parallel layout: how one worker's ranks split a denoising step. Torch-free, so the CLI, the
settings and the planner read it without loading a model.

Ranks are numbered ``rank = cfg_index · sequence + ulysses_index · ring + ring_index``: the two halves of
classifier-free guidance (``cfg=2``) each take a copy of the sequence-parallel ranks, and within a
sequence group Ulysses (all-to-all over attention heads) is the outer split and the ring (key/value
chunks passed around) the inner one, so a layout of both is USP's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^\s*(cfg|ulysses|ring)\s*=\s*(\d+)\s*$")
SYNTAX = "comma-separated degrees, e.g. 'cfg=2,ulysses=2' or 'ring=4' (cfg is 1 or 2; each degree >= 1)"


@dataclass(frozen=True)
class ParallelLayout:
    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    def __post_init__(self) -> None:
        if self.cfg not in (1, 2):
            raise ValueError(f"cfg={self.cfg}: classifier-free guidance has two branches, so cfg is 1 or 2")
        for name in ("ulysses", "ring"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: a degree is at least 1")

    @classmethod
    def parse(cls, text: str) -> ParallelLayout:
        """``'cfg=2,ulysses=2'``, ``'ring=4'``; ``''`` or ``'none'``: one rank."""
        if text.strip().lower() in ("", "none", "1"):
            return cls()
        degrees: dict[str, int] = {}
        for part in text.split(","):
            match = _PART.match(part)
            if match is None:
                raise ValueError(f"--parallel {text!r}: {part.strip()!r} is not a degree; use {SYNTAX}")
            name, value = match.group(1), int(match.group(2))
            if name in degrees:
                raise ValueError(f"--parallel {text!r}: {name} is given twice")
            degrees[name] = value
        return cls(**degrees)

    def __str__(self) -> str:
        parts = [f"{name}={getattr(self, name)}" for name in ("cfg", "ulysses", "ring") if getattr(self, name) > 1]
        return ",".join(parts) or "none"

    @property
    def world(self) -> int:
        """Processes (one per device) the layout runs on."""
        return self.cfg * self.sequence

    @property
    def sequence(self) -> int:
        """Ranks that split one evaluation's tokens."""
        return self.ulysses * self.ring

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """``(cfg_index, ulysses_index, ring_index)`` of ``rank``."""
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} is outside a layout of {self.world}")
        cfg_index, within = divmod(rank, self.sequence)
        ulysses_index, ring_index = divmod(within, self.ring)
        return cfg_index, ulysses_index, ring_index

    def rank_of(self, cfg_index: int, ulysses_index: int, ring_index: int) -> int:
        return cfg_index * self.sequence + ulysses_index * self.ring + ring_index

    def groups(self) -> dict[str, list[list[int]]]:
        """Every sub-group, by kind: the ranks that exchange with each other (each rank in one of each)."""
        cfg, ulysses, ring = self.cfg, self.ulysses, self.ring
        return {
            "cfg": [[self.rank_of(c, u, r) for c in range(cfg)] for u in range(ulysses) for r in range(ring)],
            "sequence": [[self.rank_of(c, u, r) for u in range(ulysses) for r in range(ring)] for c in range(cfg)],
            "ulysses": [[self.rank_of(c, u, r) for u in range(ulysses)] for c in range(cfg) for r in range(ring)],
            "ring": [[self.rank_of(c, u, r) for r in range(ring)] for c in range(cfg) for u in range(ulysses)],
        }

    def check_model(self, heads: int) -> None:
        """Ulysses gives each rank whole attention heads: its degree must divide the model's heads."""
        if heads % self.ulysses:
            raise ValueError(
                f"ulysses={self.ulysses} does not divide the model's {heads} attention heads: each rank takes "
                f"whole heads. Use a ulysses degree that divides {heads}, or ring={self.ulysses} instead "
                "(the ring splits tokens, not heads)"
            )


def chunk_sizes(length: int, parts: int) -> list[int]:
    """How ``torch.tensor_split`` cuts ``length`` into ``parts``: the first ``length % parts`` one longer."""
    base, extra = divmod(length, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
