"""Whether an uploaded file is an adapter for the served model: its pairs read as diffusers reads them
(``models/lora.py``) and checked against the model's linear layers, as published by whichever process
loaded the model (``publish_layout``). torch is imported only here, when an adapter is checked: the
distributed API role lists and resolves adapters without it."""

from __future__ import annotations

import json
from collections.abc import Callable

from reelserve.schemas import ErrorCode, ReelserveError
from reelserve.storage.base import Storage


def layout_key(model: str) -> str:
    return f"adapters/layouts/{model}.json"


def publish_layout(storage: Storage, model: str, shapes: dict[str, tuple[int, int]]) -> None:
    """The model's linear layers (name -> in, out features), for checks in processes without the model."""
    storage.put(layout_key(model), json.dumps(shapes, sort_keys=True).encode())


def fits_published_layout(storage: Storage) -> Callable[[bytes, str], None]:
    """``AdapterRegistry``'s check: raises ``ValueError`` saying why the bytes are no adapter for the model."""

    def check(data: bytes, model: str) -> None:
        try:
            shapes = {name: (i, o) for name, (i, o) in json.loads(storage.get(layout_key(model))).items()}
        except FileNotFoundError:
            raise ReelserveError(ErrorCode.unavailable, f"no worker has loaded {model} yet, and an adapter is "
                                 "checked against its layers; retry once one has") from None
        from reelserve.models.lora import LoraFormatError, check_fits, read_lora

        try:
            check_fits(read_lora(data), shapes)
        except LoraFormatError as exc:
            raise ValueError(str(exc)) from None

    return check
