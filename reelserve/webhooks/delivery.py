"""Delivering one webhook: sign, POST, retry with backoff, and report every attempt so it can be stored."""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self

import httpx

from reelserve.schemas.jobs import Job
from reelserve.schemas.webhooks import WebhookDelivery, WebhookStatus
from reelserve.webhooks.signing import decode_secret, encode_payload, sign
from reelserve.webhooks.ssrf import UnsafeWebhookURL, WebhookHostUnresolved, check_webhook_url_async

# Retried besides every 5xx: request timeout and rate limiting say "later", not "never".
RETRYABLE_STATUS_CODES = frozenset({408, 429})
RETRY_AFTER_STATUS_CODES = frozenset({429, 503})


OnUpdate = Callable[[WebhookDelivery], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[Any]]


class _Outcome(NamedTuple):
    """What one attempt came to."""

    delivered: bool
    retryable: bool
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait


def job_payload(job: Job) -> dict[str, Any]:
    """The Standard Webhooks payload for a job's current state: ``{type, timestamp, data}``, where
    ``data`` is the video object. The timestamp is the job's, so every retry sends the same body."""
    moment = job.completed_at if job.completed_at is not None else job.created_at
    return {
        "type": f"video.{job.status.value}",
        "timestamp": datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z"),
        "data": job.to_video_object(),
    }


class WebhookSender:
    """POSTs signed webhooks, retrying what may succeed later.

    :param client: the HTTP client to send with; ``None``: the sender makes (and ``aclose`` closes) one.
        Redirects are never followed, whatever the client's setting.
    :param max_attempts: attempts per message, the first included (at least 1).
    :param base_delay_s: the backoff cap after the first failed attempt; it doubles after each one.
    :param max_delay_s: the most any wait between attempts may be, ``Retry-After`` included.
    :param timeout_s: the whole of one attempt: connect, send, and the response's headers.
    :param allow: hostnames and CIDRs that may be called although not public (see ``check_webhook_url``).
    :param rng: the source of backoff jitter.
    :param sleep: how to wait between attempts (tests pass one that returns at once).
    :param clock: Unix seconds, for the signature timestamp and the recorded times.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        timeout_s: float = 10.0,
        allow: Sequence[str] = (),
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if base_delay_s < 0 or max_delay_s < 0 or timeout_s <= 0:
            raise ValueError("delays must be >= 0 and timeout_s > 0")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.allow = list(allow)  # read at every attempt, so a change applies to retries too
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._clock = clock

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def deliver(
        self, url: str, secret: str, msg_id: str, payload: dict[str, Any], on_update: OnUpdate | None = None
    ) -> WebhookDelivery:
        """Send ``payload`` to ``url`` until it is delivered or cannot be; return the final state.

        ``on_update`` gets a copy of the state after every attempt (to persist it); if it raises, delivery
        stops and the error propagates. Every attempt carries ``msg_id`` and is signed afresh. Raises
        ``ValueError`` at once for a malformed ``secret`` or a payload that is not JSON."""
        decode_secret(secret)
        body = encode_payload(payload)
        state = WebhookDelivery(url=url)
        while True:
            outcome = await self._attempt(url, secret, msg_id, body)
            state.attempts += 1
            state.last_status_code = outcome.status_code
            state.last_error = outcome.error
            delay: float | None = None
            if outcome.delivered:
                state.status, state.delivered_at = WebhookStatus.delivered, self._clock()
            elif outcome.retryable and state.attempts < self.max_attempts:
                delay = self.backoff_delay(state.attempts, outcome.retry_after)
            else:
                state.status = WebhookStatus.failed
            state.next_attempt_at = None if delay is None else self._clock() + delay
            if on_update is not None:
                result = on_update(state.model_copy())
                if inspect.isawaitable(result):
                    await result
            if delay is None:
                return state
            await self._sleep(delay)

    def backoff_delay(self, failed_attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure: the receiver's ``Retry-After`` if
        it gave one, else full jitter:
        uniform in [0, min(max_delay_s, base_delay_s * 2**(failed_attempts - 1))].
        Never more than ``max_delay_s``."""
        if retry_after is not None:
            return min(self.max_delay_s, max(0.0, retry_after))
        # The exponent is bounded so a huge max_attempts cannot overflow the float.
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** min(failed_attempts - 1, 64))
        return self._rng.uniform(0, cap)

    async def _attempt(self, url: str, secret: str, msg_id: str, body: bytes) -> _Outcome:
        try:
            # Again at every attempt: the name may resolve elsewhere now than at submission.
            await check_webhook_url_async(url, self.allow)
        except WebhookHostUnresolved as exc:
            return _Outcome(delivered=False, retryable=True, error=exc.message)
        except UnsafeWebhookURL as exc:
            return _Outcome(delivered=False, retryable=False, error=exc.message)
        headers = {"content-type": "application/json", **sign(secret, msg_id, int(self._clock()), body)}
        request = self._client.build_request("POST", url, content=body, headers=headers, timeout=self.timeout_s)
        try:
            # httpx's timeout bounds each read, not the whole; a receiver trickling bytes is cut off here.
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.send(request, stream=True, follow_redirects=False)
                await response.aclose()  # the body is never read: only the status matters
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(delivered=False, retryable=True, error=f"timed out after {self.timeout_s:g}s")
        except httpx.TransportError as exc:
            return _Outcome(delivered=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _Outcome(delivered=False, retryable=False, error=f"{type(exc).__name__}: {exc}")
        return self._judge(response)

    def _judge(self, response: httpx.Response) -> _Outcome:
        code = response.status_code
        if 200 <= code < 300:
            return _Outcome(delivered=True, retryable=False, status_code=code)
        error = f"receiver answered HTTP {code} {response.reason_phrase}".rstrip()
        if 300 <= code < 400:
            return _Outcome(False, False, code, f"{error}; redirects are not followed")
        if code >= 500 or code in RETRYABLE_STATUS_CODES:
            retry_after = None
            if code in RETRY_AFTER_STATUS_CODES:
                retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
            return _Outcome(False, True, code, error, retry_after)
        return _Outcome(False, False, code, error)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or
    unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)

