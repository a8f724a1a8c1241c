"""``reelserve bench``: load against a running server."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reelserve.loadgen.plot import MISSING_MATPLOTLIB
from reelserve.loadgen.workload import LoadConfig

if TYPE_CHECKING:  # the runner and the report pull in httpx and numpy: imported when a load runs
    from reelserve.loadgen.report import LoadReport, TierStats
    from reelserve.loadgen.runner import LoadProgress

app = typer.Typer(help="Benchmarks against a running server.", no_args_is_help=True)
console = Console(stderr=True)

# LoadConfig field -> the flag that sets it, so a config error names what the user typed.
_FLAGS = {
    "url": "--url",
    "api_key": "--api-key",
    "rate": "--rate",
    "profile": "--profile",
    "step_rate": "--step-rate",
    "step_at_s": "--step-at",
    "spike_rate": "--spike-rate",
    "spike_at_s": "--spike-at",
    "spike_length_s": "--spike-length",
    "duration_s": "--duration",
    "max_requests": "--max-requests",
    "drain_timeout_s": "--drain-timeout",
    "prompts": "--prompt",
    "repeat_rate": "--repeat-rate",
    "tier_mix": "--tier-mix",
    "deadlines": "--deadline",
    "allow_degrade": "--allow-degrade",
    "params": "--param",
    "seed": "--seed",
    "poll_interval_s": "--poll-interval",
    "max_poll_interval_s": "--poll-interval",
    "cancel_unfinished": "--cancel-unfinished",
}


def _tier_numbers(flag: str, text: str | None) -> dict[str, float] | None:
    """'realtime:0.2,standard:0.8' -> {'realtime': 0.2, 'standard': 0.8}."""
    if text is None:
        return None
    parsed: dict[str, float] = {}
    for item in text.split(","):
        name, sep, number = item.partition(":")
        try:
            if not sep or not name.strip():
                raise ValueError
            parsed[name.strip()] = float(number)
        except ValueError:
            raise typer.BadParameter(
                f"expected tier:number pairs, comma-separated (e.g. realtime:0.2,standard:0.8); got {item!r}",
                param_hint=f"'{flag}'",
            ) from None
    return parsed


def _params(items: list[str]) -> dict[str, Any]:
    """'key=value' pairs; a value that parses as JSON (10, 5.0, true) is taken as that, else as text."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value; got {item!r}", param_hint="'--param'")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def _config_error(exc: ValidationError) -> typer.BadParameter:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    # No field: the profile check, LoadConfig's one check across fields.
    return typer.BadParameter(message, param_hint=f"'{_FLAGS.get(field, '--profile')}'")


@app.command()
def load(
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    rate: Annotated[float, typer.Option(help="Mean arrivals per second (Poisson).")] = 1.0,
    duration: Annotated[float, typer.Option(help="Seconds of arrivals.")] = 60.0,
    max_requests: Annotated[int, typer.Option(help="Hard cap on requests sent.")] = 1000,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for jobs after the last arrival.")
    ] = 60.0,
    profile: Annotated[str, typer.Option(help="poisson, step or spike.")] = "poisson",
    step_rate: Annotated[float | None, typer.Option(help="step: the rate after --step-at.")] = None,
    step_at: Annotated[float | None, typer.Option(help="step: seconds in when the rate changes.")] = None,
    spike_rate: Annotated[float | None, typer.Option(help="spike: the rate during the spike.")] = None,
    spike_at: Annotated[float | None, typer.Option(help="spike: seconds in when it starts.")] = None,
    spike_length: Annotated[float | None, typer.Option(help="spike: seconds it lasts.")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="A prompt of the mix (repeatable).")] = None,
    repeat_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction resending an earlier body (cache hits).")
    ] = 0.0,
    tier_mix: Annotated[
        str | None, typer.Option(help="Tier weights, e.g. realtime:0.2,standard:0.8.")
    ] = None,
    deadline: Annotated[str | None, typer.Option(help="deadline_seconds per tier, e.g. realtime:30.")] = None,
    allow_degrade: Annotated[
        bool | None,
        typer.Option("--allow-degrade/--no-allow-degrade", help="Send allow_degrade on every request."),
    ] = None,
    allow_degrade_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Send allow_degrade=true on this fraction, false on the rest."),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="key=value merged into each body (repeatable).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="REELSERVE_API_KEY", help="Bearer key.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the arrivals and the bodies.")] = 0,
    poll_interval: Annotated[float, typer.Option(help="Shortest seconds between polls of a job.")] = 0.2,
    cancel_unfinished: Annotated[bool, typer.Option(help="Cancel jobs unfinished at the end.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report here.")] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of latency and queue depth.")
    ] = None,
) -> None:
    """Replay a workload against a running server, open-loop, and report per tier."""
    if allow_degrade is not None and allow_degrade_fraction is not None:
        raise typer.BadParameter(
            "give --allow-degrade or --allow-degrade-fraction, not both",
            param_hint="'--allow-degrade-fraction'",
        )
    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise typer.BadParameter(MISSING_MATPLOTLIB, param_hint="'--plot'")
    fields: dict[str, Any] = {
        "url": url,
        "api_key": api_key,
        "rate": rate,
        "profile": profile,
        "step_rate": step_rate,
        "step_at_s": step_at,
        "spike_rate": spike_rate,
        "spike_at_s": spike_at,
        "spike_length_s": spike_length,
        "duration_s": duration,
        "max_requests": max_requests,
        "drain_timeout_s": drain_timeout,
        "repeat_rate": repeat_rate,
        "tier_mix": _tier_numbers("--tier-mix", tier_mix),
        "deadlines": _tier_numbers("--deadline", deadline),
        "allow_degrade": allow_degrade if allow_degrade is not None else allow_degrade_fraction,
        "params": _params(param or []),
        "seed": seed,
        "poll_interval_s": poll_interval,
        "max_poll_interval_s": max(poll_interval, 1.0),
        "cancel_unfinished": cancel_unfinished,
    }
    if prompt:
        fields["prompts"] = prompt
    try:
        config = LoadConfig(**fields)
    except ValidationError as exc:
        raise _config_error(exc) from None
    report = _run_with_progress(config)
    _print_report(report)
    if json_path is not None:
        console.print(f"report written to {report.to_json(json_path)}")
    if plot_path is not None:
        console.print(f"plot written to {report.plot(plot_path)}")


def _run_with_progress(config: LoadConfig) -> LoadReport:
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        sent = progress.add_task("sent", total=None, detail="")
        done = progress.add_task("answered", total=None, detail="")

        def show(state: LoadProgress) -> None:
            over = state.rejected + state.transport_errors + state.finished
            progress.update(
                sent,
                completed=state.sent,
                total=state.planned,
                detail="draining" if state.draining else "arriving",
            )
            progress.update(
                done,
                completed=over,
                total=state.planned,
                detail=f"{state.accepted} accepted, {state.rejected} rejected, "
                f"{state.accepted - state.finished} running",
            )

        from reelserve.loadgen.runner import run_load

        return asyncio.run(run_load(config, on_progress=show))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rows(stats: list[TierStats]) -> list[tuple[str, list[str]]]:
    """(label, a cell per column) of the summary; a row per error code only where some column has it."""

    def count(label: str, get: Callable[[TierStats], int]) -> tuple[str, list[str]]:
        return label, [str(get(s)) for s in stats]

    rows = [
        count("sent", lambda s: s.sent),
        count("accepted", lambda s: s.accepted),
        count("rejected", lambda s: s.rejected),
    ]
    for code in sorted({c for s in stats for c in s.rejected_by_code}):
        rows.append(count(f"  rejected: {code}", lambda s, c=code: s.rejected_by_code.get(c, 0)))
    rows += [
        count("  without Retry-After", lambda s: s.rejections_without_retry_after),
        count("5xx answers", lambda s: s.server_errors),
    ]
    if any(s.transport_errors for s in stats):
        rows.append(count("no answer", lambda s: s.transport_errors))
    rows.append(count("completed", lambda s: s.completed))
    for code in sorted({c for s in stats for c in s.failed}):
        rows.append(count(f"  failed: {code}", lambda s, c=code: s.failed.get(c, 0)))
    if any(s.cancelled or s.lost for s in stats):
        rows += [count("cancelled", lambda s: s.cancelled), count("lost (404)", lambda s: s.lost)]
    rows.append(count("unfinished", lambda s: s.unfinished))
    for name in ("p50", "p95", "p99"):
        rows.append((f"e2e {name} (s)", [_seconds(getattr(s.e2e_s, name)) for s in stats]))
    for name in ("p50", "p95", "p99"):
        rows.append((f"queue wait {name} (s)", [_seconds(getattr(s.queue_wait_s, name)) for s in stats]))
    rows += [
        ("completed/s", [f"{s.throughput_per_s:.2f}" for s in stats]),
        count("degraded", lambda s: s.degraded),
    ]
    for field in sorted({f for s in stats for f in s.degraded_fields}):
        rows.append(count(f"  degraded: {field}", lambda s, f=field: s.degraded_fields.get(f, 0)))
    rows += [
        count("deadline misses", lambda s: s.deadline_misses),
        count("cache hits", lambda s: s.cache_hits),
    ]
    return rows


def _print_report(report: LoadReport) -> None:
    """One column per tier and one for all: it stays narrow with many metrics and few tiers."""
    names = [*report.tiers, "all"]
    stats = [*report.tiers.values(), report.overall]
    table = Table(
        title=f"{report.overall.sent} requests over {report.span_s:.1f}s; "
        f"step scheduling: {report.step_scheduling.label()}"
    )
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right", style="bold" if name == "all" else None)
    for label, cells in _rows(stats):
        table.add_row(label, *cells)
    Console().print(table)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(metavar="A.json", help="A report of `bench load --json` (the baseline).")],
    b: Annotated[
        Path, typer.Argument(metavar="B.json", help="Another, compared with A (e.g. the same load, step scheduling off).")
    ],
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the comparison here.")] = None,
) -> None:
    """Two load reports side by side per tier: e2e p50/p95/p99, completed and completed/s, with B/A."""
    from reelserve.loadgen.compare import compare_reports
    from reelserve.loadgen.report import LoadReport

    reports = []
    for name, path in (("A", a), ("B", b)):
        try:
            reports.append(LoadReport.from_json(path))
        except (OSError, ValueError) as exc:  # ValidationError is a ValueError
            raise typer.BadParameter(f"not a load report: {str(exc).splitlines()[0]}", param_hint=name) from None
    out = Console()
    for name, path, report in zip(("A", "B"), (a, b), reports, strict=True):
        out.print(f"{name}: {path}: {report.overall.sent} requests over {report.span_s:.1f}s; step scheduling: "
                  f"{report.step_scheduling.label()}", markup=False, highlight=False)
    rows = compare_reports(*reports)
    table = Table("tier", "", "A", "B", "B/A", title="B against A")
    for row in rows:
        table.add_row(row.tier, row.metric, _number(row.a), _number(row.b), _number(row.ratio))
    out.print(table)
    if json_path is not None:
        document = {"a": str(a), "b": str(b), "a_step_scheduling": reports[0].step_scheduling.model_dump(),
                    "b_step_scheduling": reports[1].step_scheduling.model_dump(),
                    "rows": [row.model_dump() for row in rows]}
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"comparison written to {json_path}")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
