"""Secrets read from files (``--api-keys-file`` and the like): the recommended way, since flags show in
``ps`` and environment variables in ``/proc``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from reelserve.schemas.slo import TenantPolicy
from reelserve.webhooks.signing import decode_secret


def read_secret_files(settings: Any, names: Iterable[str]) -> None:
    """Each ``<name>_file`` given, read into ``<name>``; ValueError when both are given or it cannot be read."""
    for name in names:
        path: Path | None = getattr(settings, f"{name}_file")
        if path is None:
            continue
        if getattr(settings, name):
            raise ValueError(f"give {name} or {name}_file, not both")
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"{name}_file: cannot read {path} ({exc.strerror})") from None
        setattr(settings, name, _parse_secret_file(name, text))


def _parse_secret_file(name: str, text: str) -> object:
    """A keys file: one key a line, blank lines and '#' comments skipped. A secret file: its text,
    trimmed. A tenants file: the JSON of --tenants."""
    if name == "tenants":
        return TypeAdapter(dict[str, TenantPolicy]).validate_json(text)
    if name == "webhook_secret":
        secret = text.strip()
        decode_secret(secret)  # ValueError says what is wrong with it
        return secret
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
