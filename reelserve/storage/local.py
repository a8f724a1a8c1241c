"""``Storage`` on a local directory: each key is a file under ``root``."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath

_COPY_CHUNK = 1 << 20


class LocalStorage:
    """Blobs as files under ``root`` (created if missing).

    Keys are relative ``/``-separated paths such as ``videos/<job_id>/video.mp4``. A key that is
    empty, absolute, or has an empty, ``.`` or ``..`` segment raises ``ValueError``, so no key
    can name a file outside ``root``. Missing keys raise ``FileNotFoundError``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``; readers see the old file or the whole new one.

        The bytes go to a temporary file in the same directory, are fsynced, and then replace
        the target in one ``os.replace``, so a crash never leaves a truncated blob behind.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)  # makes the rename itself durable

    def get(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def copy(self, src_key: str, dst_key: str) -> None:
        """Give ``dst_key`` the bytes of ``src_key``: a hard link (instant, no extra disk), or where the
        filesystem refuses one, a copy. Either way deleting ``src_key`` later leaves ``dst_key`` whole,
        and a reader sees no ``dst_key`` or all of it. Raises ``FileNotFoundError`` for a missing source.
        """
        src = self._existing(src_key)
        dst = self._path(dst_key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        # Link under a temporary name, then rename over the target: os.link alone fails if it exists.
        tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex}.tmp"
        try:
            try:
                os.link(src, tmp)
            except FileNotFoundError:
                raise FileNotFoundError(f"no blob stored under {src_key!r}") from None
            except OSError:  # another device, or a filesystem without hard links
                with src.open("rb") as source, tmp.open("wb") as target:
                    shutil.copyfileobj(source, target, _COPY_CHUNK)
                    target.flush()
                    os.fsync(target.fileno())
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(dst.parent)

    def size(self, key: str) -> int:
        """Size of the blob in bytes."""
        return self._existing(key).stat().st_size

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive, as in an HTTP Range header.

        ``end`` past the blob is clipped to its last byte. Raises ``ValueError`` when
        ``start < 0`` or ``end < start``; the caller validates ranges against ``size`` first.
        """
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range {start}-{end}")
        with self._existing(key).open("rb") as f:
            f.seek(start)
            return f.read(end - start + 1)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        """Delete the blob ``prefix`` and every blob under the directory ``prefix``.

        ``prefix`` is a key or a directory of keys (``videos/<job_id>``), never a partial
        name: ``videos/ab`` does not delete ``videos/abc``. Directories left empty are removed,
        up to (not including) ``root``. Returns how many blobs were deleted.
        """
        path = self._path(prefix.rstrip("/"))
        if path.is_file():
            path.unlink()
            self._prune_empty_dirs(path.parent)
            return 1
        if not path.is_dir():
            return 0
        deleted = 0
        # Bottom-up so each directory is empty by the time it is visited.
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            current = Path(dirpath)
            for name in filenames:
                (current / name).unlink()
                deleted += not _is_temp_name(name)
            for name in dirnames:
                _rmdir_if_empty(current / name)
        _rmdir_if_empty(path)
        self._prune_empty_dirs(path.parent)
        return deleted

    def local_path(self, key: str) -> Path | None:
        """The file for ``key`` (whether or not it exists yet)."""
        return self._path(key)

    def _path(self, key: str) -> Path:
        if not key:
            raise ValueError("storage key must not be empty")
        if "\\" in key or "\x00" in key:
            raise ValueError(f"storage key must be a '/'-separated path without NUL: {key!r}")
        parts = key.split("/")
        if PurePosixPath(key).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"storage key must be relative, with no empty, '.' or '..' segments: {key!r}")
        return self.root.joinpath(*parts)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob stored under {key!r}")
        return path

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and directory.is_relative_to(self.root):
            if not _rmdir_if_empty(directory):
                return
            directory = directory.parent


def _is_temp_name(name: str) -> bool:
    """Whether ``name`` is an in-flight ``put`` temp file (not a blob, so not counted)."""
    return name.startswith(".") and name.endswith(".tmp")


def _rmdir_if_empty(directory: Path) -> bool:
    try:
        directory.rmdir()
    except OSError:  # not empty, or already gone
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
