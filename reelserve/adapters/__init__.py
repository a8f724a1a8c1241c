"""LoRA adapters as data: which exist, whose they are, the model each fits, and where their bytes are
(``registry.py``). Torch-free: the distributed API role lists and checks them without a model; the
layers that apply them are ``models/lora.py``."""

from reelserve.adapters.registry import NAME_PATTERN, AdapterInfo, AdapterRegistry

__all__ = ["NAME_PATTERN", "AdapterInfo", "AdapterRegistry"]
