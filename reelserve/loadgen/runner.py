"""``run_load``: send the planned arrivals open-loop, follow each accepted job to its end, sample /metrics.

Open loop: each arrival is its own task, started at its planned offset whether or not earlier requests
have been answered, so a slow server cannot slow the arrivals down. The whole run is bounded: it ends
``drain_timeout_s`` after the last arrival at the latest, when whatever is still running is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from reelserve.loadgen.records import LOST, QueueSample, RequestRecord
from reelserve.loadgen.report import LoadReport
from reelserve.loadgen.step_scheduling import StepScheduling, read_counters, read_settings
from reelserve.loadgen.workload import LoadConfig, PlannedRequest, plan_requests

QUEUE_DEPTH = "reelserve_queue_depth"
TIER_QUEUE_DEPTH = "reelserve_tier_queue_depth"
# After the drain deadline: time allowed for cancelled tasks to unwind and, if asked, to cancel jobs.
_SHUTDOWN_S = 5.0


@dataclass(frozen=True)
class LoadProgress:
    """Counts so far, for a progress display. ``finished``: accepted jobs seen final. A request is
    done when rejected, unanswered (transport error) or finished."""

    planned: int
    sent: int
    accepted: int
    rejected: int
    transport_errors: int
    finished: int
    elapsed_s: float
    draining: bool


ProgressCallback = Callable[[LoadProgress], None]


async def run_load(
    config: LoadConfig,
    on_progress: ProgressCallback | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadReport:
    """Run ``config`` against its server and report. Never sends more than ``max_requests``; returns
    within ``duration_s + drain_timeout_s`` plus a few seconds of shutdown (and of reading the server's
    step scheduling: ``step_scheduling.READ_TIMEOUT_S``). ``on_progress`` is called
    (from the event loop; keep it quick) whenever a count changes. ``transport`` replaces the network
    (tests: ``httpx.MockTransport``)."""
    return await _LoadRun(config, on_progress, transport).run()


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:  # an HTTP date: legal, but not something this server sends
        return None


def _queue_sample(text: str, t_s: float) -> QueueSample:
    sample = QueueSample(t_s=t_s)
    for family in text_string_to_metric_families(text):
        if family.name == QUEUE_DEPTH:
            sample.total = sum(s.value for s in family.samples if s.name == QUEUE_DEPTH)
        elif family.name == TIER_QUEUE_DEPTH:
            for s in family.samples:
                if s.name == TIER_QUEUE_DEPTH and "tier" in s.labels:
                    sample.by_tier[s.labels["tier"]] = s.value
    return sample


class _LoadRun:
    def __init__(
        self,
        config: LoadConfig,
        on_progress: ProgressCallback | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.config = config
        self.on_progress = on_progress
        self.transport = transport
        self.plan = plan_requests(config)
        self.records: list[RequestRecord] = []
        self.samples: list[QueueSample] = []
        self.poll_slots = asyncio.Semaphore(config.max_concurrent_polls)
        self.draining = False
        self.start = 0.0  # loop.time() at the start; offsets are from here
        # Running counts for progress reports: recounting the records on every event would be quadratic.
        self.accepted = self.rejected = self.transport_errors = self.finished = 0

    def now_s(self) -> float:
        return asyncio.get_running_loop().time() - self.start

    async def run(self) -> LoadReport:
        config = self.config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        limits = httpx.Limits(
            max_connections=config.max_connections, max_keepalive_connections=config.max_connections
        )
        started_at = time.time()
        loop = asyncio.get_running_loop()
        self.start = loop.time()
        last_arrival = self.plan[-1].at_s if self.plan else 0.0
        drain_deadline = self.start + last_arrival + config.drain_timeout_s
        # trust_env off: proxy variables must not reroute a probe aimed at a given server.
        async with httpx.AsyncClient(
            base_url=config.url,
            headers=headers,
            timeout=config.request_timeout_s,
            limits=limits,
            trust_env=False,
            transport=self.transport,
        ) as client:
            sampler = asyncio.create_task(self._sample_metrics(client, drain_deadline))
            # Beside the arrivals, so that a server slow to answer it does not delay them.
            step_before = asyncio.create_task(self._step_scheduling_before(client))
            tasks: list[asyncio.Task[None]] = []
            try:
                async with asyncio.timeout_at(drain_deadline):
                    await self._arrive(client, tasks)
                    self.draining = True
                    self._report_progress()
                    await asyncio.gather(*tasks, return_exceptions=True)
            except TimeoutError:
                pass
            finally:
                for task in [*tasks, sampler]:
                    task.cancel()
                await asyncio.gather(*tasks, sampler, return_exceptions=True)
            if config.cancel_unfinished:
                await self._cancel_unfinished(client)
            wall_s = self.now_s()
            step_scheduling = await self._step_scheduling_after(client, step_before)
        return LoadReport.build(
            config=config.model_dump(mode="json"),
            started_at=started_at,
            planned=len(self.plan),
            wall_s=wall_s,
            records=sorted(self.records, key=lambda r: r.index),
            queue_samples=self.samples,
            step_scheduling=step_scheduling,
        )

    @staticmethod
    async def _step_scheduling_before(client: httpx.AsyncClient) -> tuple[StepScheduling, dict[str, float]]:
        return await read_settings(client), await read_counters(client)

    @staticmethod
    async def _step_scheduling_after(
        client: httpx.AsyncClient, before: asyncio.Task[tuple[StepScheduling, dict[str, float]]]
    ) -> StepScheduling:
        """The settings read at the start, with what the step counters moved by since."""
        if not before.done():  # the server never answered: nothing to compare the counters with
            before.cancel()
            await asyncio.gather(before, return_exceptions=True)
            return StepScheduling(source="unknown: the server did not answer during the run")
        settings, counters = before.result()
        return settings.with_counters(counters, await read_counters(client))

    async def _arrive(self, client: httpx.AsyncClient, tasks: list[asyncio.Task[None]]) -> None:
        for planned in self.plan:
            delay = planned.at_s - self.now_s()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._request(client, planned)))

    async def _request(self, client: httpx.AsyncClient, planned: PlannedRequest) -> None:
        record = RequestRecord(
            index=planned.index,
            tier=planned.tier,
            repeat_of=planned.repeat_of,
            scheduled_s=planned.at_s,
            sent_s=self.now_s(),
            deadline_seconds=planned.body.get("deadline_seconds"),
        )
        self.records.append(record)
        self._report_progress()
        try:
            response = await client.post("/v1/videos", json=planned.body)
        except asyncio.CancelledError:
            record.transport_error = "no answer before the drain deadline"
            raise
        except httpx.HTTPError as exc:
            record.transport_error = f"{type(exc).__name__}: {exc}"[:200]
            self.transport_errors += 1
            self._report_progress()
            return
        record.http_status = response.status_code
        if response.status_code != 200:
            self._take_rejection(record, response)
            self.rejected += 1
            self._report_progress()
            return
        self.accepted += 1
        self._take_video(record, response)
        if record.job_id is not None and record.final_status is None:
            await self._follow(client, record)

    def _take_video(self, record: RequestRecord, response: httpx.Response) -> None:
        was_final = record.final_status is not None
        with contextlib.suppress(ValueError):  # not JSON: the next poll may be
            video = response.json()
            if isinstance(video, dict):
                record.apply_video(video, self.now_s())
        if record.final_status is not None and not was_final:
            self.finished += 1
        self._report_progress()

    @staticmethod
    def _take_rejection(record: RequestRecord, response: httpx.Response) -> None:
        retry_after = response.headers.get("retry-after")
        record.has_retry_after = retry_after is not None
        record.retry_after_s = _parse_retry_after(retry_after)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            record.error_code = response.json()["error"]["code"]

    async def _follow(self, client: httpx.AsyncClient, record: RequestRecord) -> None:
        """Poll until final. The wait between polls grows with the job's age (a tenth of it, within
        [poll_interval_s, max_poll_interval_s]): the reported latency stays within about 10% while
        hundreds of long jobs do not flood the server with polls."""
        config = self.config
        # Bounded by the drain deadline's cancellation; the count bound is a second guard.
        max_polls = int((config.duration_s + config.drain_timeout_s) / config.poll_interval_s) + 2
        for _ in range(max_polls):
            age = self.now_s() - record.sent_s
            await asyncio.sleep(min(max(age / 10, config.poll_interval_s), config.max_poll_interval_s))
            async with self.poll_slots:
                try:
                    response = await client.get(f"/v1/videos/{record.job_id}")
                except httpx.HTTPError:
                    continue  # a transient failure: the next poll may work
            if response.status_code == 404:
                record.final_status, record.finished_s = LOST, self.now_s()
                self.finished += 1
                self._report_progress()
            elif response.status_code == 200:
                self._take_video(record, response)
            if record.final_status is not None:
                return

    async def _sample_metrics(self, client: httpx.AsyncClient, until: float) -> None:
        interval = self.config.metrics_interval_s
        loop = asyncio.get_running_loop()
        max_samples = int((until - loop.time()) / interval) + 2
        for _ in range(max_samples):
            if loop.time() >= until:
                return
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await client.get("/metrics")
                if response.status_code == 200:
                    self.samples.append(_queue_sample(response.text, self.now_s()))
            await asyncio.sleep(interval)

    async def _cancel_unfinished(self, client: httpx.AsyncClient) -> None:
        unfinished = [r for r in self.records if r.accepted and r.final_status is None and r.job_id]

        async def cancel(record: RequestRecord) -> Any:
            return await client.post(f"/v1/videos/{record.job_id}/cancel", timeout=_SHUTDOWN_S)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_S):
                await asyncio.gather(*(cancel(r) for r in unfinished), return_exceptions=True)

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(
                LoadProgress(
                    planned=len(self.plan),
                    sent=len(self.records),
                    accepted=self.accepted,
                    rejected=self.rejected,
                    transport_errors=self.transport_errors,
                    finished=self.finished,
                    elapsed_s=self.now_s(),
                    draining=self.draining,
                )
            )
