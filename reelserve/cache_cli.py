"""``reelserve cache``: work with a running server's result cache from outside it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # imported when a prewarm runs: every CLI start would pay for httpx
    import httpx

app = typer.Typer(help="Work with a running server's result cache.", no_args_is_help=True)
console = Console(stderr=True)

_FINAL = frozenset({"completed", "failed", "cancelled"})


class Outcome(StrEnum):
    completed = "completed"
    cached = "already cached"
    failed = "failed"


@dataclass
class _InFlight:
    prompt: str
    video_id: str
    deadline: float


@dataclass
class PrewarmReport:
    counts: Counter[Outcome] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (prompt, reason)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped.

    Raises ``ValueError`` when the file is missing, unreadable or holds no prompt."""
    if not path.is_file():
        raise ValueError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read prompts file {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file has no prompts (blank lines and # comments are skipped): {path}")
    return prompts


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class Prewarmer:
    """Submits prompts to ``/v1/videos`` with at most ``concurrency`` of its jobs queued or running at once,
    so requests from real users are never stuck behind many prewarm jobs. A refusal that says when to
    come back (429/503 with ``Retry-After``: a full queue, a cache-only load level) is retried then,
    until the prompt's ``timeout_s``.

    :param client: an ``httpx.Client`` with the server's base URL (and auth header) set.
    :param body: request fields shared by every prompt (seed, model, size, ...).
    :param concurrency: most prewarm jobs queued or running at the same time (>= 1).
    :param timeout_s: seconds a job may take from submission; past that it is cancelled and counted failed.
    :param poll_interval_s: seconds between status polls.
    """

    def __init__(self, client: httpx.Client, body: dict[str, Any], concurrency: int = 1,
                 timeout_s: float = 600.0, poll_interval_s: float = 0.5) -> None:
        self.client = client
        self.body = body
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s

    def run(self, prompts: list[str], on_done: Callable[[str, Outcome], None] = lambda _p, _o: None) -> PrewarmReport:
        """Raises ``httpx.TransportError`` when the server cannot be reached."""
        report = PrewarmReport()

        def finish(prompt: str, outcome: Outcome, reason: str = "") -> None:
            report.counts[outcome] += 1
            if outcome is Outcome.failed:
                report.failures.append((prompt, reason))
            on_done(prompt, outcome)

        pending = [(prompt, time.monotonic() + self.timeout_s) for prompt in reversed(prompts)]
        in_flight: list[_InFlight] = []
        not_before = 0.0  # the server's last Retry-After
        while pending or in_flight:
            while pending and len(in_flight) < self.concurrency and time.monotonic() >= not_before:
                prompt, deadline = pending.pop()
                submitted = self._submit(prompt, deadline, finish)
                if isinstance(submitted, float):  # refused for now: back to the front of the line
                    pending.append((prompt, deadline))
                    not_before = time.monotonic() + submitted
                elif submitted is not None:
                    in_flight.append(submitted)
            if in_flight or pending:
                time.sleep(self.poll_interval_s)
                in_flight = [job for job in in_flight if not self._poll(job, finish)]
        return report

    def _submit(self, prompt: str, deadline: float, finish: Callable[..., None]) -> _InFlight | float | None:
        """The job in flight; or seconds to wait before submitting ``prompt`` again; or None (settled)."""
        response = self.client.post("/v1/videos", json={**self.body, "prompt": prompt})
        retry_after = response.headers.get("retry-after", "")
        if response.status_code in (429, 503) and retry_after.isdigit():
            if time.monotonic() + int(retry_after) < deadline:
                return float(int(retry_after))
            finish(prompt, Outcome.failed, f"{_error_message(response)} (gave up after {self.timeout_s:g}s)")
            return None
        if response.status_code != 200:
            finish(prompt, Outcome.failed, _error_message(response))
            return None
        video = response.json()
        job = _InFlight(prompt, video["id"], deadline)
        return None if self._settle(job, video, finish) else job

    def _poll(self, job: _InFlight, finish: Callable[..., None]) -> bool:
        """True once ``job`` is settled (final, vanished or timed out)."""
        response = self.client.get(f"/v1/videos/{job.video_id}")
        if response.status_code != 200:
            finish(job.prompt, Outcome.failed, _error_message(response))
            return True
        if self._settle(job, response.json(), finish):
            return True
        if time.monotonic() > job.deadline:
            self.client.post(f"/v1/videos/{job.video_id}/cancel")  # free the slot on the server too
            finish(job.prompt, Outcome.failed, f"timed out after {self.timeout_s:g}s (cancelled)")
            return True
        return False

    @staticmethod
    def _settle(job: _InFlight, video: dict[str, Any], finish: Callable[..., None]) -> bool:
        status = video.get("status")
        if status not in _FINAL:
            return False
        if status == "completed":
            finish(job.prompt, Outcome.cached if video.get("cached") else Outcome.completed)
        else:
            error = video.get("error") or {}
            finish(job.prompt, Outcome.failed, f"{status}: {error.get('message', 'no reason given')}")
        return True


def _summary(report: PrewarmReport, total: int) -> Table:
    table = Table("outcome", "prompts", title="cache prewarm")
    for outcome in Outcome:
        table.add_row(outcome.value, str(report.counts[outcome]))
    table.add_row("total", str(total))
    return table


@app.command()
def prewarm(
    prompts_file: Annotated[Path, typer.Argument(help="One prompt per line; blank lines and # comments skipped.")],
    url: Annotated[str, typer.Option(help="Base URL of the running server.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="REELSERVE_API_KEY", help="Bearer key, if the server "
                                                "has --api-keys.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every prewarm request. Cache keys include the seed: "
                                      "prewarmed videos only answer requests that send this same seed.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Most prewarm jobs queued or running at once: real "
                                             "traffic of the same priority tier waits behind at most this many "
                                             "prewarm jobs.")] = 1,
    priority: Annotated[str, typer.Option(help="Priority tier of every prewarm request; the lowest tier keeps "
                                          "prewarming out of real traffic's way. '' sends none (the key's "
                                          "default tier).")] = "batch",
    model: Annotated[str | None, typer.Option(help="Model name; the server's default when unset.")] = None,
    size: Annotated[str | None, typer.Option(help="WxH; the model's default when unset.")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames; the model's default when unset.")] = None,
    num_inference_steps: Annotated[int | None, typer.Option(help="Steps; the model's default when unset.")] = None,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds one prompt may take, retries after a refusal "
                                           "with Retry-After included, before it is cancelled and counted "
                                           "failed.")] = 600.0,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between status polls.")] = 0.5,
) -> None:
    """Generate and cache every prompt of PROMPTS_FILE through a running server, a few at a time.

    Exits 1 if any prompt failed, 2 on a bad prompts file."""
    try:
        prompts = read_prompts(prompts_file)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    body: dict[str, Any] = {"seed": seed, "model": model, "size": size, "num_frames": num_frames,
                            "num_inference_steps": num_inference_steps, "priority": priority or None}
    body = {name: value for name, value in body.items() if value is not None}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    columns = (TextColumn("prewarming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    import httpx

    with (
        httpx.Client(base_url=url, headers=headers, timeout=30) as client,
        Progress(*columns, console=console) as bar,
    ):
        task = bar.add_task("prompts", total=len(prompts))
        prewarmer = Prewarmer(client, body, concurrency, timeout, poll_interval)
        try:
            report = prewarmer.run(prompts, on_done=lambda _p, _o: bar.advance(task))
        except httpx.TransportError as exc:
            console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
            raise typer.Exit(1) from None
    Console().print(_summary(report, len(prompts)))
    for prompt, reason in report.failures:
        console.print(f"[red]failed:[/red] {prompt!r}: {reason}")
    if report.counts[Outcome.failed]:
        raise typer.Exit(1)
