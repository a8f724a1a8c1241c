"""Delivery against a real HTTP receiver on loopback; only the wait between attempts is replaced."""

from __future__ import annotations

import random

import pytest
from standardwebhooks.webhooks import Webhook
from support import HANG, Receiver, free_port, scheduling_params

from reelserve.schemas.jobs import Job, JobStatus
from reelserve.webhooks import (
    WebhookDelivery,
    WebhookSender,
    WebhookStatus,
    encode_payload,
    generate_secret,
    job_message_id,
    job_payload,
)

LOOPBACK = ["127.0.0.0/8"]
PAYLOAD = {"type": "video.completed", "data": {"id": "video_1", "prompt": "a café at dusk 🎬"}}


class RecordingSleep:
    """Returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class HighestJitter(random.Random):
    """Always the top of the jitter range, so the cap itself is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


def sender(sleep: RecordingSleep, **options: object) -> WebhookSender:
    return WebhookSender(**{"allow": LOOPBACK, "sleep": sleep, "rng": random.Random(7), **options})  # type: ignore[arg-type]


async def test_delivers_signed_compact_json(receiver: Receiver) -> None:
    secret, sleep = generate_secret(), RecordingSleep()
    async with sender(sleep) as webhooks:
        result = await webhooks.deliver(receiver.url, secret, "msg_one", PAYLOAD)
    assert result.status == WebhookStatus.delivered
    assert (result.attempts, result.last_status_code, result.last_error) == (1, 200, None)
    assert result.delivered_at is not None and result.next_attempt_at is None
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert request.body == encode_payload(PAYLOAD)
    assert Webhook(secret).verify(request.body, request.headers) == PAYLOAD
    assert sleep.delays == []


async def test_two_500s_then_200_is_delivered_on_the_third_attempt(receiver: Receiver) -> None:
    receiver.answer(500, 500)
    secret, sleep, updates = generate_secret(), RecordingSleep(), []
    msg_id = job_message_id("video_abc")

    async def on_update(state: WebhookDelivery) -> None:  # async, as a store write would be
        updates.append(state)

    async with sender(sleep) as webhooks:
        result = await webhooks.deliver(receiver.url, secret, msg_id, PAYLOAD, on_update)
    assert result.status == WebhookStatus.delivered and result.attempts == 3
    assert [u.attempts for u in updates] == [1, 2, 3]
    assert [u.status for u in updates] == ["pending", "pending", "delivered"]
    assert [u.last_status_code for u in updates] == [500, 500, 200]
    assert "HTTP 500" in (updates[0].last_error or "")
    assert all(u.next_attempt_at is not None for u in updates[:2]) and updates[2].next_attempt_at is None
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {msg_id}
    for request in receiver.requests:  # each attempt is signed, and verifies
        assert Webhook(secret).verify(request.body, request.headers) == PAYLOAD
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_client_errors_are_not_retried(receiver: Receiver, status: int) -> None:
    receiver.answer(status)
    sleep, updates = RecordingSleep(), []
    async with sender(sleep) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD, updates.append)
    assert (result.status, result.attempts, result.last_status_code) == (WebhookStatus.failed, 1, status)
    assert f"HTTP {status}" in (result.last_error or "")
    assert len(receiver.requests) == 1 and sleep.delays == [] and len(updates) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(receiver: Receiver, status: int) -> None:
    receiver.answer(status)
    async with sender(RecordingSleep()) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    assert (result.status, result.attempts) == (WebhookStatus.delivered, 2)
    assert len(receiver.requests) == 2


async def test_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.answer((302, {"location": "http://169.254.169.254/"}))
    async with sender(RecordingSleep()) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    assert (result.status, result.attempts, result.last_status_code) == (WebhookStatus.failed, 1, 302)
    assert "redirects are not followed" in (result.last_error or "")


async def test_exhausting_attempts_fails_with_the_last_error(receiver: Receiver) -> None:
    receiver.answer(500, 500, 503)
    sleep, updates = RecordingSleep(), []
    async with sender(sleep, max_attempts=3) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD, updates.append)
    assert (result.status, result.attempts, result.last_status_code) == (WebhookStatus.failed, 3, 503)
    assert "HTTP 503" in (result.last_error or "") and result.next_attempt_at is None
    assert [u.status for u in updates] == ["pending", "pending", "failed"]
    assert len(receiver.requests) == 3 and len(sleep.delays) == 2


async def test_connection_refused_is_retried_then_fails() -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sleep = RecordingSleep()
    async with sender(sleep, max_attempts=2) as webhooks:
        result = await webhooks.deliver(closed, generate_secret(), "msg_a", PAYLOAD)
    assert (result.status, result.attempts, result.last_status_code) == (WebhookStatus.failed, 2, None)
    assert "ConnectError" in (result.last_error or "")
    assert len(sleep.delays) == 1


async def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.answer(HANG)
    updates: list[WebhookDelivery] = []
    async with sender(RecordingSleep(), timeout_s=0.3) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD, updates.append)
    assert (result.status, result.attempts) == (WebhookStatus.delivered, 2)
    assert updates[0].last_error == "timed out after 0.3s" and updates[0].last_status_code is None


async def test_backoff_caps_double_up_to_the_maximum(receiver: Receiver) -> None:
    receiver.answer(*[500] * 6)
    sleep = RecordingSleep()
    async with sender(sleep, max_attempts=6, base_delay_s=1.0, max_delay_s=8.0, rng=HighestJitter()) as webhooks:
        await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 8.0]


async def test_jittered_delays_stay_within_zero_and_the_cap(receiver: Receiver) -> None:
    receiver.answer(*[500] * 8)
    sleep = RecordingSleep()
    async with sender(sleep, max_attempts=8, base_delay_s=0.5, max_delay_s=10.0) as webhooks:
        await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    caps = [min(10.0, 0.5 * 2**n) for n in range(7)]
    assert len(sleep.delays) == 7
    assert all(0 <= delay <= cap for delay, cap in zip(sleep.delays, caps, strict=True))
    assert len(set(sleep.delays)) == 7  # jittered, not a fixed schedule
    webhooks = WebhookSender(base_delay_s=0.5, max_delay_s=10.0, rng=random.Random(1))
    for n in range(1, 40):
        assert 0 <= webhooks.backoff_delay(n) <= min(10.0, 0.5 * 2 ** (n - 1))
    await webhooks.aclose()


async def test_retry_after_is_honoured_and_capped(receiver: Receiver) -> None:
    receiver.answer((429, {"retry-after": "3"}), (503, {"retry-after": "1000"}), (503, {"retry-after": "soon"}))
    sleep = RecordingSleep()
    async with sender(sleep, max_delay_s=30.0, rng=HighestJitter()) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    assert result.status == WebhookStatus.delivered
    assert sleep.delays == [3.0, 30.0, 4.0]  # unreadable Retry-After: the backoff (cap 2**2)


async def test_url_is_checked_again_before_every_attempt(receiver: Receiver) -> None:
    receiver.answer(500)
    async with sender(RecordingSleep()) as webhooks:

        def on_update(state: WebhookDelivery) -> None:
            webhooks.allow.clear()  # from now on loopback is refused, as after a DNS rebinding

        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD, on_update)
    assert (result.status, result.attempts, result.last_status_code) == (WebhookStatus.failed, 2, None)
    assert "webhook_url" in (result.last_error or "") and "loopback" in (result.last_error or "")
    assert len(receiver.requests) == 1


async def test_internal_url_is_never_called(receiver: Receiver) -> None:
    async with WebhookSender(sleep=RecordingSleep()) as webhooks:
        result = await webhooks.deliver(receiver.url, generate_secret(), "msg_a", PAYLOAD)
    assert (result.status, result.attempts) == (WebhookStatus.failed, 1)
    assert "loopback" in (result.last_error or "")
    assert receiver.requests == []


async def test_malformed_secret_raises_before_any_request(receiver: Receiver) -> None:
    async with sender(RecordingSleep()) as webhooks:
        with pytest.raises(ValueError, match="webhook secret"):
            await webhooks.deliver(receiver.url, "not-a-secret", "msg_a", PAYLOAD)
    assert receiver.requests == []


async def test_job_payload_is_the_video_object_and_stable(receiver: Receiver) -> None:
    job = Job(params=scheduling_params(steps=4), status=JobStatus.completed, completed_at=1_700_000_000.5)
    payload = job_payload(job)
    assert payload["type"] == "video.completed"
    assert payload["timestamp"] == "2023-11-14T22:13:20.500000Z"
    assert payload["data"] == job.to_video_object()
    assert encode_payload(job_payload(job)) == encode_payload(payload)  # retries send the same body
    secret = generate_secret()
    async with sender(RecordingSleep()) as webhooks:
        await webhooks.deliver(receiver.url, secret, job_message_id(job.id), payload)
    [request] = receiver.requests
    assert Webhook(secret).verify(request.body, request.headers)["data"]["id"] == job.id
