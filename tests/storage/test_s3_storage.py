"""S3Storage: the Storage protocol against moto's real standalone S3 server, spoken to over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import boto3
import httpx
import pytest
from support import free_port

from reelserve.storage import Storage
from reelserve.storage import s3 as s3_module
from reelserve.storage.s3 import S3Storage, StorageUnavailable

REGION = "us-east-1"


@pytest.fixture
def bucket(moto_url: str) -> str:
    """A fresh, empty bucket per test: tests share one server, never each other's objects."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION).create_bucket(Bucket=name)
    return name


@pytest.fixture
def storage(moto_url: str, bucket: str) -> S3Storage:
    return S3Storage(bucket, endpoint_url=moto_url, region=REGION)


def raw_keys(moto_url: str, bucket: str) -> list[str]:
    """Every object key in ``bucket``, as S3 itself lists them."""
    response = boto3.client("s3", endpoint_url=moto_url, region_name=REGION).list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in response.get("Contents", []))


def test_satisfies_the_protocol(storage: S3Storage) -> None:
    backend: Storage = storage  # checked by type checkers; here it must at least construct
    assert backend.exists("nothing/here") is False


def test_put_then_get_size_exists(storage: S3Storage) -> None:
    storage.put("videos/job_1/video.mp4", b"hello world")
    assert storage.get("videos/job_1/video.mp4") == b"hello world"
    assert storage.size("videos/job_1/video.mp4") == 11
    assert storage.exists("videos/job_1/video.mp4")
    assert not storage.exists("videos/job_1/thumbnail.jpg")
    assert not storage.exists("videos/job_1")  # a "directory" is not a blob


def test_overwrite_replaces_the_blob(storage: S3Storage) -> None:
    storage.put("k.bin", b"A" * 1000)
    storage.put("k.bin", b"B" * 10)
    assert storage.get("k.bin") == b"B" * 10
    assert storage.size("k.bin") == 10


def test_empty_blob(storage: S3Storage) -> None:
    storage.put("empty.bin", b"")
    assert storage.get("empty.bin") == b""
    assert storage.size("empty.bin") == 0
    assert storage.read_range("empty.bin", 0, 0) == b""


def test_read_range_is_inclusive(storage: S3Storage) -> None:
    data = bytes(range(100))
    storage.put("a/b.bin", data)
    assert storage.read_range("a/b.bin", 0, 0) == data[:1]
    assert storage.read_range("a/b.bin", 10, 19) == data[10:20]
    assert storage.read_range("a/b.bin", 99, 99) == data[99:]
    assert storage.read_range("a/b.bin", 0, 99) == data
    assert storage.read_range("a/b.bin", 95, 500) == data[95:]  # clipped to the last byte
    assert storage.read_range("a/b.bin", 100, 200) == b""  # wholly past the end, as LocalStorage


def test_read_range_rejects_inverted_or_negative(storage: S3Storage) -> None:
    storage.put("a.bin", b"0123456789")
    with pytest.raises(ValueError):
        storage.read_range("a.bin", 5, 4)
    with pytest.raises(ValueError):
        storage.read_range("a.bin", -1, 4)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get("videos/missing/video.mp4"),
        lambda s: s.size("videos/missing/video.mp4"),
        lambda s: s.read_range("videos/missing/video.mp4", 0, 10),
        lambda s: s.copy("videos/missing/video.mp4", "videos/new/video.mp4"),
    ],
    ids=["get", "size", "read_range", "copy"],
)
def test_missing_key_raises_file_not_found_naming_it(storage: S3Storage, call: Callable[[S3Storage], object]) -> None:
    with pytest.raises(FileNotFoundError, match="videos/missing/video.mp4"):
        call(storage)
    assert not storage.exists("videos/new/video.mp4")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../escape", "a//b", "a/./b", "a/", "a\\b"])
def test_unsafe_keys_are_rejected_like_local_storage(storage: S3Storage, key: str) -> None:
    for call in (lambda: storage.put(key, b"x"), lambda: storage.get(key), lambda: storage.exists(key)):
        with pytest.raises(ValueError):
            call()


def test_copy_outlives_the_source(storage: S3Storage) -> None:
    storage.put("videos/a/video.mp4", b"frames")
    storage.copy("videos/a/video.mp4", "videos/b/video.mp4")
    assert storage.delete_prefix("videos/a/") == 1
    assert not storage.exists("videos/a/video.mp4")
    assert storage.get("videos/b/video.mp4") == b"frames"


def test_copy_replaces_an_existing_target(storage: S3Storage) -> None:
    storage.put("a.bin", b"new")
    storage.put("b.bin", b"old")
    storage.copy("a.bin", "b.bin")
    assert storage.get("b.bin") == b"new"


def test_delete_prefix_deletes_only_under_the_prefix(storage: S3Storage, moto_url: str, bucket: str) -> None:
    for name in ("video.mp4", "thumbnail.jpg", "extra/nested.bin", "extra/more.bin"):
        storage.put(f"videos/job_1/{name}", b"x")
    storage.put("videos/job_10/video.mp4", b"keep")  # shares a string prefix, not a directory
    storage.put("videos/job_2/video.mp4", b"keep")
    assert storage.delete_prefix("videos/job_1") == 4
    assert raw_keys(moto_url, bucket) == ["videos/job_10/video.mp4", "videos/job_2/video.mp4"]
    assert storage.delete_prefix("videos/nope") == 0


def test_delete_prefix_of_a_single_key_and_with_trailing_slash(storage: S3Storage) -> None:
    storage.put("videos/job_3/video.mp4", b"v")
    storage.put("videos/job_3/thumbnail.jpg", b"t")
    assert storage.delete_prefix("videos/job_3/video.mp4") == 1
    assert storage.exists("videos/job_3/thumbnail.jpg")
    assert storage.delete_prefix("videos/job_3/") == 1
    assert not storage.exists("videos/job_3/thumbnail.jpg")


def test_delete_prefix_sends_batches(
    storage: S3Storage, moto_url: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 takes 1000 keys per DeleteObjects; a batch of 3 shows the batching without 1000 PUTs.
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 3)
    for i in range(8):
        storage.put(f"many/{i}.bin", b"x")
    storage.put("other.bin", b"keep")
    assert storage.delete_prefix("many") == 8
    assert raw_keys(moto_url, bucket) == ["other.bin"]


def test_delete_prefix_rejects_unsafe_prefixes(storage: S3Storage) -> None:
    storage.put("videos/a.bin", b"x")
    for prefix in ("", "/", "..", "../videos"):
        with pytest.raises(ValueError):
            storage.delete_prefix(prefix)
    assert storage.exists("videos/a.bin")


def test_prefixes_isolate_storages_on_one_bucket(moto_url: str, bucket: str) -> None:
    tenant_a = S3Storage(bucket, prefix="/tenant-a//", endpoint_url=moto_url, region=REGION)
    tenant_b = S3Storage(bucket, prefix="tenant-b", endpoint_url=moto_url, region=REGION)
    tenant_a.put("videos/x/video.mp4", b"from a")
    tenant_b.put("videos/x/video.mp4", b"from b")
    tenant_a.put("videos/y/video.mp4", b"only a")
    assert tenant_a.get("videos/x/video.mp4") == b"from a"
    assert tenant_b.get("videos/x/video.mp4") == b"from b"
    assert not tenant_b.exists("videos/y/video.mp4")
    assert raw_keys(moto_url, bucket) == [
        "tenant-a/videos/x/video.mp4", "tenant-a/videos/y/video.mp4", "tenant-b/videos/x/video.mp4"
    ]
    assert tenant_a.delete_prefix("videos") == 2
    assert tenant_b.get("videos/x/video.mp4") == b"from b"


def test_presigned_url_serves_the_bytes_without_credentials(storage: S3Storage) -> None:
    data = bytes(range(256)) * 40
    storage.put("videos/p/video.mp4", data)
    response = httpx.get(storage.presigned_url("videos/p/video.mp4", expires_s=60))
    assert response.status_code == 200
    assert response.content == data
    assert "content-disposition" not in response.headers


def test_presigned_url_with_filename_sets_content_disposition(storage: S3Storage) -> None:
    storage.put("videos/p/video.mp4", b"frames")
    response = httpx.get(storage.presigned_url("videos/p/video.mp4", filename='sunset "v2" é.mp4'))
    assert response.status_code == 200
    assert response.content == b"frames"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="sunset _v2_ _.mp4"')
    assert "filename*=UTF-8''sunset%20%22v2%22%20%C3%A9.mp4" in disposition


def test_check_passes_for_an_existing_bucket(storage: S3Storage) -> None:
    storage.check()


def test_check_raises_for_a_missing_bucket(moto_url: str) -> None:
    with pytest.raises(StorageUnavailable, match="'no-such-bucket' does not exist"):
        S3Storage("no-such-bucket", endpoint_url=moto_url, region=REGION).check()


def test_check_raises_for_an_unreachable_endpoint(moto_url: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # moto_url keeps the dummy credentials in the environment
    with pytest.raises(StorageUnavailable, match="unreachable"):
        S3Storage("some-bucket", endpoint_url=nobody, region=REGION).check()


def test_local_path_is_none(storage: S3Storage) -> None:
    storage.put("videos/x/video.mp4", b"abc")
    assert storage.local_path("videos/x/video.mp4") is None


def test_injected_client_is_used(moto_url: str, bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    storage = S3Storage(bucket, prefix="injected", client=client)
    assert storage.client is client
    storage.put("k", b"v")
    assert raw_keys(moto_url, bucket) == ["injected/k"]
