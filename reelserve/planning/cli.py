"""``reelserve plan``."""

from __future__ import annotations


def plan() -> None:
    """Answer capacity questions from a cost model and a workload description."""
    raise NotImplementedError
