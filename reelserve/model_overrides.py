"""Several models behind one server, as settings: ``--model`` repeated, and ``--model-overrides`` (the flags
that may differ per model, parsed and checked against the settings' own types: a bad one names the model,
the flag and what is allowed)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from reelserve.accel.options import AccelerationOptions

PER_MODEL = (*AccelerationOptions.model_fields, "preset", "dtype", "max_batch_size", "max_wait_ms", "warmup_runs",
             "cpu_threads", "pipeline_lanes")


def served_models(model: str, model_path: str | None) -> list[str]:
    """``--model`` repeated (or comma-separated) as names, the default first."""
    names = [name.strip() for name in model.split(",") if name.strip()]
    if not names:
        raise ValueError("model: name at least one model (see `reelserve models`)")
    if len(set(names)) < len(names):
        raise ValueError(f"model: {model!r} names a model twice")
    if len(names) > 1 and model_path is not None:
        raise ValueError("model_path applies to one model; serve a model from another path alone")
    return names


def parse_overrides(text: str, models: list[str], fields: dict[str, Any]) -> dict[str, dict[str, object]]:
    """'micro:preset=fast;tiny:max_batch_size=8,cfg_batching=false' → {model: {field: value}}."""
    overrides: dict[str, dict[str, object]] = {}
    for part in (p.strip() for p in text.split(";") if p.strip()):
        model, _, assignments = part.partition(":")
        model = model.strip()
        if model not in models:
            raise ValueError(f"model_overrides: {model!r} is not a served model ({', '.join(models)})")
        for assignment in (a.strip() for a in assignments.split(",") if a.strip()):
            name, _, value = assignment.partition("=")
            name = name.strip().replace("-", "_")
            if name not in PER_MODEL:
                raise ValueError(f"model_overrides: {name!r} cannot differ per model; these can: {', '.join(PER_MODEL)}")
            try:
                parsed = TypeAdapter(fields[name].annotation).validate_strings(value.strip())
            except ValidationError as exc:
                raise ValueError(f"model_overrides: {model}:{name}={value.strip()!r}: "
                                 f"{exc.errors()[0]['msg']}") from None
            overrides.setdefault(model, {})[name] = parsed
    return overrides
