"""The load probe is a client: its public names are these, and it imports nothing of the server."""

from __future__ import annotations

import ast
from pathlib import Path

import reelserve.loadgen

PACKAGE = Path(reelserve.loadgen.__file__).parent


def test_public_names_are_exactly_these() -> None:
    assert set(reelserve.loadgen.__all__) == {
        "DEFAULT_PROMPTS", "UNTIERED", "LoadConfig", "LoadProgress", "LoadReport", "Percentiles",
        "PlannedRequest", "QueueSample", "RequestRecord", "TierStats", "percentile", "plan_requests",
        "run_load",
    }  # fmt: skip
    assert all(hasattr(reelserve.loadgen, name) for name in reelserve.loadgen.__all__)


def test_it_imports_nothing_of_the_server() -> None:
    # So it measures any reelserve version over HTTP, and `reelserve bench` starts without torch.
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reelserve"):
                # reelserve.lazy_names: the standard-library-only helper behind the package's lazy names
                allowed = ("reelserve.loadgen", "reelserve.lazy_names")
                assert node.module.startswith(allowed), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("reelserve", "torch")) for a in node.names), path.name
