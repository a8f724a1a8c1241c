"""The models reelserve can run, how to build or load them, and how to place them on a device.

The registry's table (``specs``) is imported at once; the rest (torch, diffusers) only when first
used, so that reading the table (``reelserve models``, settings checks) costs no framework import.
"""

from __future__ import annotations

from reelserve.lazy_names import lazy_names
from reelserve.models.specs import ModelSpec, get_spec, list_specs, weights_source

_LAZY = {
    "LoadOptions": "reelserve.models.options",
    "LoadedModel": "reelserve.models.registry",
    "build_tiny_pipeline": "reelserve.models.tiny",
    "load_model": "reelserve.models.registry",
    "model_version": "reelserve.models.fingerprint",
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


__getattr__ = lazy_names(__name__, _LAZY)
