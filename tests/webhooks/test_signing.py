"""Signatures are checked with the reference ``standardwebhooks`` package, not with our own code."""

import base64
import math
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelserve.webhooks.signing import (
    decode_secret,
    encode_payload,
    generate_secret,
    job_message_id,
    new_message_id,
    sign,
    signature,
)

PAYLOAD = {"type": "video.completed", "data": {"id": "video_1", "prompt": "a café at dusk 🎬"}}


def test_generated_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert decode_secret(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert generate_secret() != secret
    Webhook(secret)  # the reference implementation accepts it


def test_secret_size_outside_the_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        generate_secret(16)


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_"])
def test_malformed_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        decode_secret(bad)


def test_known_answer_from_the_standard_webhooks_spec() -> None:
    headers = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
        b'{"test": 2432232314}',
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_signature_verifies_with_the_reference_implementation() -> None:
    secret, msg_id, body = generate_secret(), new_message_id(), encode_payload(PAYLOAD)
    headers = sign(secret, msg_id, int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == PAYLOAD


def test_tampered_body_fails_verification() -> None:
    secret, body = generate_secret(), encode_payload(PAYLOAD)
    headers = sign(secret, new_message_id(), int(time.time()), body)
    tampered = body.replace(b"video_1", b"video_2")
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered, headers)


def test_other_secret_or_other_id_fails_verification() -> None:
    secret, body = generate_secret(), encode_payload(PAYLOAD)
    headers = sign(secret, "msg_a", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_b"})


def test_stale_timestamp_fails_verification_so_retries_must_resign() -> None:
    secret, body = generate_secret(), encode_payload(PAYLOAD)
    headers = sign(secret, "msg_a", int(time.time()) - 600, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)


def test_message_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        sign(generate_secret(), "msg.1", 0, b"{}")


def test_job_message_id_is_stable_per_job_and_event() -> None:
    first = job_message_id("video_abc")
    assert first == job_message_id("video_abc")
    assert first.startswith("msg_") and len(first) == len("msg_") + 32
    assert first != job_message_id("video_abd")
    assert first != job_message_id("video_abc", event="progress")
    assert new_message_id() != new_message_id()


def test_payload_is_compact_utf8_json() -> None:
    body = encode_payload(PAYLOAD)
    assert b", " not in body and b": " not in body
    assert "café at dusk 🎬".encode() in body  # raw UTF-8, not \u escapes
    with pytest.raises(ValueError):
        encode_payload({"x": math.nan})


def test_signature_covers_the_exact_bytes() -> None:
    secret = generate_secret()
    assert signature(secret, "msg_a", 1, b'{"a":1}') != signature(secret, "msg_a", 1, b'{"a": 1}')
    assert signature(secret, "msg_a", 1, b"{}") != signature(secret, "msg_a", 2, b"{}")
