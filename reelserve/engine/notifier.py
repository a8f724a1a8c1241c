"""Webhooks of finished jobs: the URL is checked when the job is submitted, the video object is
POSTed once the job is final, and every attempt's outcome is kept on the job (``Job.webhook``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from reelserve.jobs.async_store import AsyncJobStore
from reelserve.jobs.base import JobStore
from reelserve.schemas import Job, VideoCreateRequest, WebhookDelivery, WebhookStatus, invalid
from reelserve.webhooks import WebhookSender, check_webhook_url_async, job_message_id, job_payload

log = logging.getLogger(__name__)
_RESUME_WINDOW_S = 86400.0  # on start, finished jobs younger than this with a webhook still owed are resent


class WebhookNotifier:
    """
    :param secret_for: a tenant's signing secret (``whsec_...``), or None when it has none.
    :param allow: hosts or CIDRs a webhook may reach although they are not public (tests: loopback).
    """

    def __init__(
        self,
        store: JobStore,
        sender: WebhookSender,
        secret_for: Callable[[str | None], str | None],
        allow: Sequence[str] = (),
    ) -> None:
        self.store = AsyncJobStore(store, name="reelserve-webhook-store")
        self.sender = sender
        self._secret_for = secret_for
        self.allow = list(allow)
        self._sending: dict[str, asyncio.Task[None]] = {}

    async def check(self, request: VideoCreateRequest, tenant: str | None) -> None:
        """422 naming ``webhook_url`` unless it may be used: a signing secret exists for the caller,
        and the URL is http(s) and resolves to public addresses (or is allow-listed)."""
        if request.webhook_url is None:
            return
        if self._secret_for(tenant) is None:
            raise invalid(
                "webhook_url",
                "webhook_url needs a signing secret, and this server has none for this API key "
                "(set --webhook-secret, or the key's webhook_secret in --tenants)",
            )
        await check_webhook_url_async(request.webhook_url, self.allow)

    def attach(self, job: Job, request: VideoCreateRequest) -> None:
        if request.webhook_url is not None:
            job.webhook_url, job.webhook = request.webhook_url, WebhookDelivery(url=request.webhook_url)

    def finished(self, job: Job) -> None:
        """``job`` is final: send its webhook, once (a second call while one is sending is ignored)."""
        if job.webhook is None or job.webhook.status is not WebhookStatus.pending or job.id in self._sending:
            return
        task = asyncio.create_task(self._send(job.id), name=f"webhook-{job.id}")
        self._sending[job.id] = task
        task.add_done_callback(lambda _: self._sending.pop(job.id, None))

    async def resume(self, now: float | None = None) -> int:
        """Send the webhooks a previous run owed (final jobs whose delivery is still pending)."""
        cutoff, after, resumed = (now or time.time()) - _RESUME_WINDOW_S, None, 0
        while True:
            page = await self.store.list(100, after)
            for job in page:
                if job.status.final and job.webhook is not None and job.webhook.status is WebhookStatus.pending:
                    self.finished(job)
                    resumed += 1
            if len(page) < 100 or page[-1].created_at < cutoff:
                return resumed
            after = page[-1].id

    async def stop(self) -> None:
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        await self.sender.aclose()
        self.store.close()

    async def _send(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.webhook_url is None:
            return
        secret = self._secret_for(job.tenant)
        if secret is None:  # the key's secret was removed since it submitted
            await self._persist(job_id, job.webhook.model_copy(update={"status": WebhookStatus.failed,
                                                                       "last_error": "no signing secret"}))
            return
        try:
            await self.sender.deliver(
                job.webhook_url, secret, job_message_id(job.id), job_payload(job), lambda s: self._persist(job_id, s)
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # a webhook never takes the server down; the job keeps its last state
            log.exception("webhook of %s failed unexpectedly", job_id)

    async def _persist(self, job_id: str, state: WebhookDelivery) -> None:
        job = await self.store.get(job_id)
        if job is not None:
            job.webhook = state
            await self.store.save(job, expect={job.status})
