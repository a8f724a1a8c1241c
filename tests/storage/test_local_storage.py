"""LocalStorage: the Storage protocol on a directory, including its path-safety rules."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from reelserve.storage import LocalStorage, Storage


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "blobs")


def test_satisfies_the_protocol(storage: LocalStorage) -> None:
    backend: Storage = storage  # checked by type checkers; here it must at least construct
    assert backend.exists("nothing/here") is False


def test_put_then_get_size_exists(storage: LocalStorage) -> None:
    storage.put("videos/job_1/video.mp4", b"hello world")
    assert storage.get("videos/job_1/video.mp4") == b"hello world"
    assert storage.size("videos/job_1/video.mp4") == 11
    assert storage.exists("videos/job_1/video.mp4")
    assert not storage.exists("videos/job_1/thumbnail.jpg")
    assert not storage.exists("videos/job_1")  # a directory is not a blob


def test_empty_blob(storage: LocalStorage) -> None:
    storage.put("empty.bin", b"")
    assert storage.get("empty.bin") == b""
    assert storage.size("empty.bin") == 0


def test_read_range_is_inclusive(storage: LocalStorage) -> None:
    data = bytes(range(100))
    storage.put("a/b.bin", data)
    assert storage.read_range("a/b.bin", 0, 0) == data[:1]
    assert storage.read_range("a/b.bin", 10, 19) == data[10:20]
    assert storage.read_range("a/b.bin", 90, 99) == data[90:]
    assert storage.read_range("a/b.bin", 0, 99) == data
    assert storage.read_range("a/b.bin", 95, 500) == data[95:]  # clipped to the last byte


def test_read_range_rejects_inverted_or_negative(storage: LocalStorage) -> None:
    storage.put("a.bin", b"0123456789")
    with pytest.raises(ValueError):
        storage.read_range("a.bin", 5, 4)
    with pytest.raises(ValueError):
        storage.read_range("a.bin", -1, 4)


def test_local_path_points_at_the_file(storage: LocalStorage, tmp_path: Path) -> None:
    storage.put("videos/x/video.mp4", b"abc")
    path = storage.local_path("videos/x/video.mp4")
    assert path == (tmp_path / "blobs" / "videos" / "x" / "video.mp4").resolve()
    assert path.read_bytes() == b"abc"


def test_overwrite_replaces_atomically_and_leaves_no_temp_files(storage: LocalStorage) -> None:
    storage.put("videos/x/video.mp4", b"old contents")
    path = storage.local_path("videos/x/video.mp4")
    assert path is not None
    old_inode = path.stat().st_ino
    storage.put("videos/x/video.mp4", b"new")
    assert storage.get("videos/x/video.mp4") == b"new"
    # A rename, not an in-place rewrite: a reader holding the old file still sees all of it.
    assert path.stat().st_ino != old_inode
    assert os.listdir(path.parent) == ["video.mp4"]


def test_reader_of_old_blob_is_unaffected_by_overwrite(storage: LocalStorage) -> None:
    storage.put("k.bin", b"A" * 1000)
    path = storage.local_path("k.bin")
    assert path is not None
    with path.open("rb") as reader:
        storage.put("k.bin", b"B" * 10)
        assert reader.read() == b"A" * 1000
    assert storage.get("k.bin") == b"B" * 10


@pytest.mark.parametrize("method", ["get", "size"])
def test_missing_key_raises_file_not_found(storage: LocalStorage, method: str) -> None:
    with pytest.raises(FileNotFoundError):
        getattr(storage, method)("videos/missing/video.mp4")


def test_missing_key_read_range_raises_file_not_found(storage: LocalStorage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_range("videos/missing/video.mp4", 0, 10)


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../escape", "videos/../../escape", "a//b", "a/./b", "a/", ".", "..", "a\\..\\b"],
)
def test_unsafe_keys_are_rejected(storage: LocalStorage, key: str) -> None:
    for call in (
        lambda: storage.put(key, b"x"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.local_path(key),
    ):
        with pytest.raises(ValueError):
            call()


def test_traversal_writes_nothing_outside_root(storage: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        storage.put("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()


def test_delete_prefix_removes_the_tree_and_empty_dirs(storage: LocalStorage, tmp_path: Path) -> None:
    storage.put("videos/job_1/video.mp4", b"v")
    storage.put("videos/job_1/thumbnail.jpg", b"t")
    storage.put("videos/job_1/extra/nested.bin", b"n")
    storage.put("videos/job_10/video.mp4", b"keep")  # shares a string prefix, not a directory
    assert storage.delete_prefix("videos/job_1") == 3
    assert not storage.exists("videos/job_1/video.mp4")
    assert not (tmp_path / "blobs" / "videos" / "job_1").exists()
    assert storage.get("videos/job_10/video.mp4") == b"keep"


def test_delete_prefix_with_trailing_slash_and_pruning(storage: LocalStorage, tmp_path: Path) -> None:
    storage.put("videos/job_2/video.mp4", b"v")
    assert storage.delete_prefix("videos/job_2/") == 1
    assert not (tmp_path / "blobs" / "videos").exists()  # emptied parents go too
    assert (tmp_path / "blobs").is_dir()  # but never the root


def test_delete_prefix_of_single_key_and_of_nothing(storage: LocalStorage) -> None:
    storage.put("videos/job_3/video.mp4", b"v")
    storage.put("videos/job_3/thumbnail.jpg", b"t")
    assert storage.delete_prefix("videos/job_3/video.mp4") == 1
    assert storage.exists("videos/job_3/thumbnail.jpg")
    assert storage.delete_prefix("videos/nope") == 0


def test_delete_prefix_rejects_unsafe_prefixes(storage: LocalStorage) -> None:
    storage.put("videos/a.bin", b"x")
    for prefix in ("", "/", "..", "../blobs"):
        with pytest.raises(ValueError):
            storage.delete_prefix(prefix)
    assert storage.exists("videos/a.bin")


def test_copy_is_a_hard_link_that_outlives_the_source(storage: LocalStorage) -> None:
    storage.put("videos/a/video.mp4", b"frames")
    storage.copy("videos/a/video.mp4", "videos/b/video.mp4")
    src, dst = storage.local_path("videos/a/video.mp4"), storage.local_path("videos/b/video.mp4")
    assert src is not None and dst is not None and os.path.samefile(src, dst)
    assert storage.delete_prefix("videos/a/") == 1
    assert storage.get("videos/b/video.mp4") == b"frames"
    assert not any(p.name.endswith(".tmp") for p in storage.root.rglob("*"))


def test_copy_replaces_an_existing_target(storage: LocalStorage) -> None:
    storage.put("a.bin", b"new")
    storage.put("b.bin", b"old")
    storage.copy("a.bin", "b.bin")
    assert storage.get("b.bin") == b"new"


def test_copy_of_a_missing_source_raises_and_leaves_nothing(storage: LocalStorage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.copy("videos/gone/video.mp4", "videos/new/video.mp4")
    assert not storage.exists("videos/new/video.mp4")
    assert not any(p.is_file() for p in storage.root.rglob("*"))


def test_copy_across_filesystems_falls_back_to_a_real_copy(storage: LocalStorage, tmp_path: Path) -> None:
    # A source directory on another filesystem (a symlink into /dev/shm) makes os.link fail with EXDEV.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(storage.root).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's tmp dir")
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        (storage.root / "videos").mkdir()
        (storage.root / "videos" / "a").symlink_to(elsewhere)
        storage.put("videos/a/video.mp4", b"x" * 3_000_000)
        storage.copy("videos/a/video.mp4", "videos/b/video.mp4")
        dst = storage.local_path("videos/b/video.mp4")
        assert dst is not None and os.stat(dst).st_dev != os.stat(elsewhere).st_dev
        (elsewhere / "video.mp4").unlink()
        assert storage.get("videos/b/video.mp4") == b"x" * 3_000_000
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
