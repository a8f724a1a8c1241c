"""Webhooks: tell a client's URL when its job is done, signed per Standard Webhooks, retried with
backoff, and never aimed at the server's own network.

Each name is imported when first used: settings need the signing helpers at every CLI start, and
the sender (httpx) need not come with them.
"""

from __future__ import annotations

from reelserve.lazy_names import lazy_names

_LAZY = {
    "UnsafeWebhookURL": "reelserve.webhooks.ssrf",
    "WebhookDelivery": "reelserve.webhooks.delivery",
    "WebhookHostUnresolved": "reelserve.webhooks.ssrf",
    "WebhookSender": "reelserve.webhooks.delivery",
    "WebhookStatus": "reelserve.webhooks.delivery",
    "check_webhook_url": "reelserve.webhooks.ssrf",
    "check_webhook_url_async": "reelserve.webhooks.ssrf",
    "encode_payload": "reelserve.webhooks.signing",
    "generate_secret": "reelserve.webhooks.signing",
    "job_message_id": "reelserve.webhooks.signing",
    "job_payload": "reelserve.webhooks.delivery",
    "new_message_id": "reelserve.webhooks.signing",
    "sign": "reelserve.webhooks.signing",
}

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

__getattr__ = lazy_names(__name__, _LAZY)
