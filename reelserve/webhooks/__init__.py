"""Webhooks: tell a client's URL when its job is done, signed per Standard Webhooks, retried with
backoff, and never aimed at the server's own network."""

from reelserve.webhooks.delivery import (
    WebhookDelivery,
    WebhookSender,
    WebhookStatus,
    job_payload,
)
from reelserve.webhooks.signing import encode_payload, generate_secret, job_message_id, new_message_id, sign
from reelserve.webhooks.ssrf import (
    UnsafeWebhookURL,
    WebhookHostUnresolved,
    check_webhook_url,
    check_webhook_url_async,
)

__all__ = [
    "UnsafeWebhookURL",
    "WebhookDelivery",
    "WebhookHostUnresolved",
    "WebhookSender",
    "WebhookStatus",
    "check_webhook_url",
    "check_webhook_url_async",
    "encode_payload",
    "generate_secret",
    "job_message_id",
    "job_payload",
    "new_message_id",
    "sign",
]
