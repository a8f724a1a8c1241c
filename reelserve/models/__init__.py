"""The models reelserve can run, how to build or load them, and how to place them on a device.

The registry's table (``specs``) is imported at once; the rest (torch, diffusers) only when first
used, so that reading the table (``reelserve models``, settings checks) costs no framework import.
"""

from __future__ import annotations

import importlib
from typing import Any

from reelserve.models.specs import ModelSpec, get_spec, list_specs

_LAZY = {
    "LoadOptions": "reelserve.models.options",
    "LoadedModel": "reelserve.models.registry",
    "build_tiny_pipeline": "reelserve.models.tiny",
    "load_model": "reelserve.models.registry",
    "model_version": "reelserve.models.fingerprint",
    "weights_source": "reelserve.models.registry",
}

__all__ = [
    "LoadOptions",
    "LoadedModel",
    "ModelSpec",
    "build_tiny_pipeline",
    "get_spec",
    "list_specs",
    "load_model",
    "model_version",
    "weights_source",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reelserve.models' has no attribute {name!r}")
