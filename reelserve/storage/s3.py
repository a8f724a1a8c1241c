"""``Storage`` on an S3 bucket (or anything speaking its API: MinIO, R2, moto): each key is an object."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

_DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}  # GET says NoSuchKey; HEAD has no body, only the status
_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}
# Fail a start-up check against a dead endpoint in seconds, not boto's default minutes.
# SigV4: regions opened since 2014 accept nothing else, and AWS is retiring SigV2 everywhere.
_CLIENT_CONFIG = Config(
    connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}, signature_version="s3v4"
)


class StorageUnavailable(RuntimeError):
    """The bucket is missing, refuses our credentials, or its endpoint does not answer."""


class S3Storage:
    """Blobs as objects in ``bucket``, each key stored as ``<prefix>/<key>``.

    Keys follow ``LocalStorage``'s rules (relative, ``/``-separated, no empty, ``.`` or ``..``
    segment; otherwise ``ValueError``) so code that works on one backend works on the other.
    Credentials come from boto3's usual chain (environment, config files, instance role);
    ``client`` replaces the boto3 client altogether. Missing keys raise ``FileNotFoundError``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        if client is None:
            # Path-style for custom endpoints: MinIO and moto on an IP or localhost have no per-bucket hostnames.
            config = _CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})) if endpoint_url else _CLIENT_CONFIG
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; a single PUT is atomic, so readers see old or new, never part."""
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data)

    def get(self, key: str) -> bytes:
        with _missing_as_file_not_found(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        return response["Body"].read()

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy (no bytes pass through us); the copy is independent of the source.

        Raises ``FileNotFoundError`` for a missing source. S3 copies at most 5 GB in one request.
        """
        source = {"Bucket": self.bucket, "Key": self._object_key(src_key)}
        with _missing_as_file_not_found(src_key):
            self.client.copy_object(Bucket=self.bucket, Key=self._object_key(dst_key), CopySource=source)

    def size(self, key: str) -> int:
        """Size of the blob in bytes."""
        with _missing_as_file_not_found(key):
            response = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        return response["ContentLength"]

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive, as in an HTTP Range header.

        ``end`` past the blob is clipped to its last byte; ``start`` past it gives ``b""``, as
        ``LocalStorage`` does. Raises ``ValueError`` when ``start < 0`` or ``end < start``.
        """
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range {start}-{end}")
        try:
            with _missing_as_file_not_found(key):
                response = self.client.get_object(
                    Bucket=self.bucket, Key=self._object_key(key), Range=f"bytes={start}-{end}"
                )
        except ClientError as error:
            if _error_code(error) == "InvalidRange":  # S3 answers 416 when start is past the end
                return b""
            raise
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete the blob ``prefix`` and every blob under ``prefix/``; returns how many were deleted.

        As with ``LocalStorage``, ``prefix`` is a key or a directory of keys, never a partial
        name: ``videos/ab`` does not delete ``videos/abc``.
        """
        base = prefix.rstrip("/")
        key = self._object_key(base)
        doomed = [key] if self.exists(base) else []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{key}/"):
            doomed.extend(obj["Key"] for obj in page.get("Contents", []))
        for i in range(0, len(doomed), _DELETE_BATCH):
            batch = doomed[i : i + _DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if errors := response.get("Errors"):
                first = errors[0]
                raise OSError(
                    f"S3 refused to delete {len(errors)} of {len(batch)} objects under {prefix!r}, "
                    f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
                )
        return len(doomed)

    def local_path(self, key: str) -> Path | None:
        """Always ``None``: objects have no filesystem path (serve them via ``presigned_url``)."""
        return None

    def presigned_url(self, key: str, expires_s: int = 3600, filename: str | None = None) -> str:
        """A URL anyone can GET ``key`` from for ``expires_s`` seconds (SigV4 allows at most 7 days).

        With ``filename`` the response carries ``Content-Disposition: attachment`` so browsers
        save it under that name. Signing is local: the key is not checked to exist.
        """
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._object_key(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = _attachment(filename)
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)

    def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the bucket exists and our credentials can reach it."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = _error_code(error)
            if code in _MISSING_BUCKET:
                reason = "does not exist"
            elif code in {"403", "AccessDenied", "Forbidden"}:
                reason = "refuses these credentials (access denied)"
            else:
                reason = f"answered {code}"
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} {reason} at {self._endpoint()}") from error
        except BotoCoreError as error:  # no connection, no credentials, bad endpoint URL
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} is unreachable at {self._endpoint()}: {error}"
            ) from error

    def _object_key(self, key: str) -> str:
        if not key:
            raise ValueError("storage key must not be empty")
        if "\\" in key or "\x00" in key:
            raise ValueError(f"storage key must be a '/'-separated path without NUL: {key!r}")
        if PurePosixPath(key).is_absolute() or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"storage key must be relative, with no empty, '.' or '..' segments: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _endpoint(self) -> str:
        return getattr(getattr(self.client, "meta", None), "endpoint_url", None) or "the default S3 endpoint"


@contextmanager
def _missing_as_file_not_found(key: str) -> Iterator[None]:
    """Turn S3's "no such key" into ``FileNotFoundError`` naming the storage key, not the object key."""
    try:
        yield
    except ClientError as error:
        if _error_code(error) in _MISSING_KEY:
            raise FileNotFoundError(f"no blob stored under {key!r}") from error
        raise


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _attachment(filename: str) -> str:
    """A Content-Disposition header value: an ASCII fallback name and the exact UTF-8 one (RFC 6266)."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
