"""The layers stay apart: only api/ (and the wiring in server.py) may know about HTTP, and serving
never imports the micro model's training code."""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reelserve"
HTTP_MODULES = ("fastapi", "starlette", "sse_starlette", "uvicorn", "reelserve.api")


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports; ``from a import b`` gives both ``a`` and ``a.b``, since b may be
    a module (``from reelserve import micro``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ["cache", "engine", "jobs", "storage", "models", "schemas", "stats", "inputs",
                                   "adapters"])
def test_layer_does_not_import_http(layer: str) -> None:
    for path in (PACKAGE / layer).glob("*.py"):
        bad = {n for n in imports_of(path) if n.startswith(HTTP_MODULES)}
        assert not bad, f"{path.name} imports {bad}"


def test_schemas_import_nothing_else_of_ours() -> None:
    for path in (PACKAGE / "schemas").glob("*.py"):
        ours = {n for n in imports_of(path) if n.startswith("reelserve.") and not n.startswith("reelserve.schemas")}
        assert not ours, f"{path.name} imports {ours}"


SERVING_LAYERS = ("cache", "engine", "jobs", "storage", "models", "schemas", "api", "stats", "inputs", "adapters")


@pytest.mark.parametrize(
    "path",
    [
        *(path for layer in SERVING_LAYERS for path in sorted((PACKAGE / layer).rglob("*.py"))),
        PACKAGE / "server.py",
    ],
    ids=lambda path: str(path.relative_to(PACKAGE)),
)
def test_serving_does_not_import_training_code(path: Path) -> None:
    # The server loads the micro model's committed weights; reelserve.micro (datasets, trainer,
    # evaluator) is only for `reelserve micro train|eval`.
    bad = {n for n in imports_of(path) if n == "reelserve.micro" or n.startswith("reelserve.micro.")}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("reelserve.cache", {"CacheDecision", "CacheEntry", "CachePolicy", "Hit", "KeyFilter", "MemoryTier",
                             "RedisTier", "ResultCache", "SemanticCache", "SensitiveRules", "cache_key",
                             "normalise_prompt", "output_signature", "prompt_hash", "redis_tier_from_url",
                             "signature_hash"}),
        ("reelserve.engine", {"BatchOutcome", "Batcher", "CacheAdmin", "Content", "Engine", "EventBus",
                              "PipelineRunner", "VideoCache", "VideoFront", "VideoService"}),
        ("reelserve.jobs", {"Broker", "JobStore", "LocalBroker", "SqliteJobStore"}),
        ("reelserve.storage", {"LocalStorage", "Storage"}),
        ("reelserve.adapters", {"NAME_PATTERN", "AdapterInfo", "AdapterRegistry"}),
        ("reelserve.stats", {"BUCKET_S", "Bucket", "LocalStats", "RedisStats", "StatsRecorder", "WorkerStatus",
                             "summarize"}),
    ],
)
def test_public_names_are_exactly_these(module: str, names: set[str]) -> None:
    exported = importlib.import_module(module)
    assert set(exported.__all__) == names
    assert all(hasattr(exported, name) for name in names)
