"""A model's version for cache keys: which weights would draw this video.

Hashing every byte of a 60 GB checkpoint would delay start-up by minutes, so a local directory is
fingerprinted by each file's name and size, the full text of its small (config) files, and the
first and last MiB of each large one, which for safetensors includes the header naming every
tensor, its shape and offset. Retraining changes the bytes read here with near certainty.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from reelserve import __version__

_SMALL = 1 << 20  # files up to this size are hashed whole
_EDGE = 1 << 20  # bytes hashed from each end of a larger file


def model_version(name: str, source: str | None) -> str:
    """``name:code:<reelserve version>`` for models built in code, ``name:hub:<id>`` for a hub id
    not present on disk, else ``name:sha256:<16 hex>`` of the directory's fingerprint."""
    if source is None:
        return f"{name}:code:{__version__}"
    path = Path(source)
    if not path.is_dir():
        return f"{name}:hub:{source}"
    return f"{name}:sha256:{directory_fingerprint(path)[:16]}"


def directory_fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(root))):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= _SMALL:
                digest.update(f.read())
            else:
                digest.update(f.read(_EDGE))
                f.seek(size - _EDGE)
                digest.update(f.read(_EDGE))
    return digest.hexdigest()


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
