"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver checks to know a
request came from us, unchanged, recently."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"

# Fixed so that a job's message id is the same in every process and after a restart: a receiver
# deduplicates retries of one message by its ``webhook-id``.
_JOB_MESSAGE_NAMESPACE = uuid.UUID("1b7f3c0e-5f0a-4c39-9a57-2f8f6a0c9d41")


def generate_secret(num_bytes: int = 32) -> str:
    """A new signing secret, ``whsec_<base64 of num_bytes random bytes>``.

    The spec asks for 24 to 64 bytes; 32 is the size of a SHA-256 digest."""
    if not 24 <= num_bytes <= 64:
        raise ValueError(f"a webhook secret must be 24 to 64 bytes, not {num_bytes}")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(num_bytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside ``whsec_<base64>``; raises ``ValueError`` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX}<base64>: {exc}") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def new_message_id() -> str:
    """A unique ``webhook-id`` for a one-off message."""
    return f"msg_{uuid.uuid4().hex}"


def job_message_id(job_id: str, event: str = "final") -> str:
    """The ``webhook-id`` of one job's ``event`` message: stable, so every retry of it (in any process)
    carries the same id, and distinct per job and event."""
    return f"msg_{uuid.uuid5(_JOB_MESSAGE_NAMESPACE, f'{job_id}/{event}').hex}"


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent. NaN and infinity are refused
    (``ValueError``): they are not JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``timestamp`` (integer Unix seconds).

    Sign every attempt afresh with the current time: receivers reject timestamps more than a few
    minutes off, so a retry cannot reuse the first attempt's headers (only its ``msg_id``)."""
    if "." in msg_id:
        # The signed content is dot-separated; a dot in the id would make it ambiguous.
        raise ValueError(f"a webhook message id may not contain '.': {msg_id!r}")
    timestamp = int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
