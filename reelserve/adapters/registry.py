"""The adapters a server offers, kept in ``Storage`` so every process of the distributed mode sees the
same ones: each adapter's bytes by content (``adapters/files/<sha256>.safetensors``, written once, never
changed) and one index (``adapters/index.json``: name -> ``AdapterInfo``). Processes re-read the index
at most every ``ttl_s`` seconds, so an adapter added or deleted through the admin API is seen by the
others within that time (hot swap, no restart).

A tenant sees the public adapters and its own; another tenant's adapter is "unknown" to it, in the
same words as one that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from reelserve.schemas import invalid
from reelserve.schemas.inputs import LoraRef, LoraRequest
from reelserve.schemas.requests import MAX_FLOW_SHIFT
from reelserve.storage.base import Storage

INDEX_KEY = "adapters/index.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_ADAPTER_BYTES = 512 * 2**20


def file_key(sha256: str) -> str:
    return f"adapters/files/{sha256.removeprefix('sha256:')}.safetensors"


class AdapterInfo(BaseModel):
    """One adapter: what it is called, what it is (its content hash), the model it fits, whose it is
    (a tenant; None: public) and what its author recommends running it with."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_' and '-', up to 128")
    sha256: str
    model: str
    owner: str | None = None
    bytes: int
    description: str = ""
    # Defaults a request that sets none gets (a distillation adapter's "4 steps, guidance 1, shift 5").
    steps: int | None = Field(default=None, ge=1)
    guidance: float | None = Field(default=None, ge=0)
    shift: float | None = Field(default=None, gt=0, le=MAX_FLOW_SHIFT)
    created_at: float = Field(default_factory=time.time)

    def public_view(self, tenant: str | None) -> dict[str, object]:
        """What ``GET /v1/adapters`` shows: everything but the owner's hash ("public" or "yours")."""
        shown = self.model_dump(exclude={"owner"})
        shown["owner"] = "public" if self.owner is None else ("yours" if self.owner == tenant else "another")
        return shown


class AdapterRegistry:
    """:param storage: where the index and the adapters' bytes live (local disk or S3).
    :param check: raises ``ValueError`` (saying why) unless the bytes are an adapter for ``model``;
        run on add. None: only the byte limit and the safetensors header are checked.
    :param write_lock: makes the lock that every change of the index holds from reading it to writing
        it back, so two changes at once both land: this process's own lock by default; the
        distributed mode's processes share one in Redis."""

    def __init__(self, storage: Storage, ttl_s: float = 2.0, check: Callable[[bytes, str], None] | None = None,
                 write_lock: Callable[[], AbstractContextManager[object]] | None = None) -> None:
        self.storage, self.ttl_s, self.check = storage, ttl_s, check
        self._index: dict[str, AdapterInfo] = {}
        self._read_at = -float("inf")
        self._lock = threading.Lock()
        own = threading.Lock()
        self._write_lock = write_lock or (lambda: own)

    def index(self) -> dict[str, AdapterInfo]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s:
                try:
                    raw = json.loads(self.storage.get(INDEX_KEY))
                except FileNotFoundError:
                    raw = {}
                self._index = {name: AdapterInfo.model_validate(info) for name, info in raw.items()}
                self._read_at = time.monotonic()
            return dict(self._index)

    def visible(self, tenant: str | None, model: str, everything: bool = False) -> list[AdapterInfo]:
        return sorted((info for info in self.index().values()
                       if info.model == model and (everything or info.owner in (None, tenant))),
                      key=lambda info: info.name)

    def resolve(self, asked: list[LoraRequest], tenant: str | None, model: str, most: int) -> tuple[LoraRef, ...]:
        """The adapters a request names, as the rows run them; a 422 naming the entry otherwise."""
        if len(asked) > most:
            raise invalid("loras", f"loras: at most {most} adapters a request on this server; got {len(asked)}"
                          if most else "loras: this server takes no adapters (start it with --adapters)")
        index, refs = self.index(), []
        for i, request in enumerate(asked):
            info = index.get(request.name)
            if info is None or info.owner not in (None, tenant) or info.model != model:
                fits = "" if info is None or info.model == model else f" for {model}"
                raise invalid(f"loras[{i}].name", f"loras[{i}].name: no adapter '{request.name}'{fits}; GET "
                              "/v1/adapters lists the ones you may use")
            if any(ref.name == request.name for ref in refs):
                raise invalid(f"loras[{i}].name", f"loras[{i}].name: '{request.name}' twice; name it once, "
                              "with the scale you want")
            refs.append(LoraRef(name=info.name, sha256=info.sha256, scale=request.scale))
        return tuple(refs)

    def add(self, info: AdapterInfo, data: bytes) -> AdapterInfo:
        """Register ``data`` as ``info.name`` (replacing an adapter of that name: its running rows go on
        with the one they loaded). Raises ``ValueError`` saying what is wrong with the file."""
        if len(data) > MAX_ADAPTER_BYTES:
            raise ValueError(f"at most {MAX_ADAPTER_BYTES // 2**20} MiB; got {len(data) / 2**20:.1f} MiB")
        check_header(data)
        if self.check is not None:
            self.check(data, info.model)
        sha = "sha256:" + hashlib.sha256(data).hexdigest()
        info = info.model_copy(update={"sha256": sha, "bytes": len(data)})
        if not self.storage.exists(file_key(sha)):
            self.storage.put(file_key(sha), data)
        with self._write_lock():
            self._write({**self._fresh_index(), info.name: info})
        return info

    def delete(self, name: str) -> bool:
        """Unlist ``name``; its bytes stay (rows that run it go on, and so do queued jobs that named it,
        and another name may share them)."""
        with self._write_lock():
            index = self._fresh_index()
            if index.pop(name, None) is None:
                return False
            self._write(index)
        return True

    def _fresh_index(self) -> dict[str, AdapterInfo]:
        """The index as stored now, not as last read (another process may have changed it since)."""
        with self._lock:
            self._read_at = -float("inf")
        return self.index()

    def data(self, sha256: str) -> bytes:
        return self.storage.get(file_key(sha256))

    def add_directory(self, directory: Path, model: str) -> list[AdapterInfo]:
        """Every ``*.safetensors`` of ``directory`` as a public adapter named by its file (with the
        description, steps and guidance of a ``<name>.json`` beside it)."""
        added = []
        for path in sorted(directory.glob("*.safetensors")):
            sidecar = path.with_suffix(".json")
            extra = json.loads(sidecar.read_text()) if sidecar.exists() else {}
            info = AdapterInfo(name=path.stem, sha256="", model=model, bytes=0, **extra)
            try:
                added.append(self.add(info, path.read_bytes()))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return added

    def _write(self, index: dict[str, AdapterInfo]) -> None:
        self.storage.put(INDEX_KEY, json.dumps({name: info.model_dump() for name, info in index.items()}).encode())
        with self._lock:
            self._index, self._read_at = index, time.monotonic()


def check_header(data: bytes) -> None:
    """A safetensors file (never a pickle): an 8-byte header length, a JSON header, tensors after it."""
    if len(data) < 8:
        raise ValueError("not a safetensors file (too short); send the adapter as .safetensors")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise ValueError("not a safetensors file (its header does not fit); send the adapter as .safetensors")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        raise ValueError("not a safetensors file (its header is no JSON); send the adapter as .safetensors") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if not ends or 8 + size + max(ends) > len(data):
        raise ValueError("a truncated safetensors file: its tensors end past the file; send the whole file")
