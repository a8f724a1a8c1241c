"""A parked row as bytes: all the loop needs to resume it at its step, in this process or another
(a drained worker's rows, a checkpoint), with the model version it was made with.

Nothing here is pickled code: the bytes are ``torch.save`` of tensors, numbers, strings, lists and
dicts, read back with ``weights_only=True``; the row's scheduler is rebuilt from its class name (a
diffusers scheduler, looked up in ``diffusers.schedulers`` only), its config and its state.
"""

from __future__ import annotations

import io
from typing import Any

import diffusers.schedulers
import torch

from reelserve.models.family import Row
from reelserve.schemas import GenerationParams

FORMAT = 1


class StaleParkedRow(ValueError):
    """Parked by another model version (or format): the job restarts from its first step instead."""


def park_bytes(row: Row, model_version: str) -> bytes:
    """``row``'s whole state, with ``model_version`` (``models.fingerprint.model_version``)."""
    scheduler = row.scheduler
    state = {
        "format": FORMAT, "model_version": model_version, "key": row.key, "params": row.params.model_dump_json(),
        # Copies: a row's embeddings are views of its whole batch's, which torch.save would write whole.
        "latents": row.latents.clone(), "timesteps": row.timesteps.clone(), "step": row.step,
        "prompt_embeds": row.prompt_embeds.clone(),
        "negative_embeds": None if row.negative_embeds is None else row.negative_embeds.clone(),
        "condition": None if row.condition is None else row.condition.clone(),
        "scheduler_class": type(scheduler).__name__, "scheduler_config": dict(scheduler.config),
        "scheduler_state": {k: v for k, v in vars(scheduler).items() if k != "_internal_dict"},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def resume_row(data: bytes, model_version: str, device: torch.device | None = None) -> Row:
    """The row parked in ``data``, on ``device`` (where it was, if None). Raises ``StaleParkedRow``
    when it was parked by another model version or format, ``ValueError`` for bytes that are not a
    parked row."""
    try:
        state: dict[str, Any] = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable input is the same answer to the caller
        raise ValueError(f"not a parked row: {type(exc).__name__}: {exc}") from exc
    if state.get("format") != FORMAT or state.get("model_version") != model_version:
        raise StaleParkedRow(
            f"parked by {state.get('model_version')!r} (format {state.get('format')}); this is {model_version!r}"
        )
    scheduler = _scheduler(state["scheduler_class"], state["scheduler_config"], state["scheduler_state"])
    return Row(state["key"], GenerationParams.model_validate_json(state["params"]), state["latents"], scheduler,
               state["timesteps"], state["prompt_embeds"], state["negative_embeds"], state["step"],
               condition=state.get("condition"))


def _scheduler(name: str, config: dict[str, Any], state: dict[str, Any]) -> Any:
    cls = getattr(diffusers.schedulers, name, None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.schedulers.SchedulerMixin):
        raise ValueError(f"not a diffusers scheduler: {name!r}")
    scheduler = cls.from_config(config)
    vars(scheduler).update(state)
    return scheduler
