"""The models reelserve can run, how to build or load them, and how to place them on a device."""

from reelserve.models.fingerprint import model_version
from reelserve.models.options import LoadOptions
from reelserve.models.registry import LoadedModel, ModelSpec, get_spec, list_specs, load_model, weights_source
from reelserve.models.tiny import build_tiny_pipeline

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
