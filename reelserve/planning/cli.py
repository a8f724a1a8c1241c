"""``reelserve plan``: capacity questions answered by simulating a workload against a cost model.

1. ``--workers N``: what latency and throughput do N workers give?
2. ``--target-p95 X``: how many workers hold p95 ≤ X seconds at this rate?
3. ``--videos K [--gpu-hour-price Z]``: what do K videos cost in GPU-hours and money?
4. ``--compare-step-scheduling``: what do continuous batching and preemption change, per tier?

Continuous batching and preemption are simulated on unless a flag or the workload file turns them
off, as the server runs them by default.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reelserve.planning.workload import Workload, parse_mix, parse_tier_mix

if TYPE_CHECKING:  # imported when a plan runs: reelserve.engine pulls in torch, too slow for every CLI start
    from reelserve.engine.cost_model import CostModel
    from reelserve.planning.capacity import BatchCost, WorkerSearch
    from reelserve.planning.report import PlanReport

DEFAULT_COST_MODEL = Path("reelserve-data/cost_model.json")
STEP_SCHEDULING = ("continuous_batching", "preemption")  # ServerConfig fields, on in the server by default


def plan(
    workers: Annotated[
        int | None, typer.Option(min=1, help="Pipeline processes (one GPU each) to simulate.")
    ] = None,
    target_p95: Annotated[
        float | None,
        typer.Option("--target-p95", min=0.0, help="Find the fewest workers with p95 ≤ this (s)."),
    ] = None,
    target_tier: Annotated[str | None, typer.Option(help="Apply --target-p95 to this tier only.")] = None,
    max_workers: Annotated[int, typer.Option(min=1, help="Largest worker count --target-p95 tries.")] = 256,
    videos: Annotated[
        int | None, typer.Option(min=1, help="Price an offline batch of this many videos.")
    ] = None,
    gpu_hour_price: Annotated[
        float | None, typer.Option(min=0.0, help="Money per GPU-hour, for --videos.")
    ] = None,
    cost_model_path: Annotated[
        Path,
        typer.Option("--cost-model", help="CostModel JSON the server saved (<data_dir>/cost_model.json)."),
    ] = DEFAULT_COST_MODEL,
    workload_file: Annotated[
        Path | None, typer.Option("--workload", help="Workload JSON; flags override it.")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Arrivals per minute.")] = None,
    profile: Annotated[str | None, typer.Option(help="poisson, step or spike.")] = None,
    step_rate: Annotated[
        float | None, typer.Option(help="step: arrivals per minute after --step-at.")
    ] = None,
    step_at: Annotated[float | None, typer.Option(help="step: seconds in when the rate changes.")] = None,
    spike_rate: Annotated[float | None, typer.Option(help="spike: arrivals per minute during it.")] = None,
    spike_at: Annotated[float | None, typer.Option(help="spike: seconds in when it starts.")] = None,
    spike_length: Annotated[float | None, typer.Option(help="spike: seconds it lasts.")] = None,
    mix: Annotated[str | None, typer.Option(help="Shapes, WxHxFRAMESxSTEPS:weight, comma-separated.")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance_scale of every shape (>1: CFG).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name of the requests.")] = None,
    repeat_rate: Annotated[
        float | None, typer.Option(help="Share of requests repeating an earlier one.")
    ] = None,
    tier_mix: Annotated[
        str | None, typer.Option(help="Tier weights, e.g. realtime:0.2,standard:0.8.")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most requests per pipeline call.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="How long a batch waits for joiners.")] = None,
    continuous_batching: Annotated[
        bool | None,
        typer.Option(
            "--continuous-batching/--no-continuous-batching",
            help="Waiting jobs join a running batch of their shape at its next step (default: on, as the server).",
        ),
    ] = None,
    preemption: Annotated[
        bool | None,
        typer.Option(
            "--preemption/--no-preemption",
            help="A running batch makes way at its next step for a more urgent job (default: on, as the server).",
        ),
    ] = None,
    compare_step_scheduling: Annotated[
        bool,
        typer.Option(
            "--compare-step-scheduling",
            help="Also replay the same arrivals with continuous batching and preemption both on and both off, "
            "and print each tier's p50/p95 and throughput side by side.",
        ),
    ] = False,
    requests: Annotated[int | None, typer.Option(help="Simulated requests.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated arrivals.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report here as JSON.")
    ] = None,
    parallel_layouts: Annotated[
        bool,
        typer.Option("--parallel-layouts", help="Instead: what each --parallel layout should give for Wan2.2 "
                     "TI2V-5B and T2V-A14B at 480p and 720p on H100 and H200, from FLOPs and communication."),
    ] = False,
) -> None:
    """Answer capacity questions from a cost model and a workload description."""
    # Not a terminal (a pipe, a file): wide enough that the tables do not fold.
    out = Console(width=None if sys.stdout.isatty() else 140)
    if parallel_layouts:
        from reelserve.planning.parallel import print_predictions

        print_predictions(out, json_path)
        return
    top_level = {
        "rate_per_min": rate,
        "profile": profile,
        "step_rate_per_min": step_rate,
        "step_at_s": step_at,
        "spike_rate_per_min": spike_rate,
        "spike_at_s": spike_at,
        "spike_length_s": spike_length,
        "model": model,
        "repeat_rate": repeat_rate,
        "requests": requests,
        "seed": seed,
    }
    server = {
        "workers": workers,
        "max_batch_size": max_batch,
        "max_wait_s": None if max_wait_ms is None else max_wait_ms / 1000.0,
        "continuous_batching": continuous_batching,
        "preemption": preemption,
    }
    try:
        workload = _build_workload(workload_file, top_level, server, mix, guidance, tier_mix)
        if target_tier is not None:
            workload.server.tier(target_tier)
    except KeyError as exc:
        _fail(f"--target-tier: no tier named {exc}")
    except ValueError as exc:
        _fail(str(exc))
    costs, cost_source = _load_cost_model(cost_model_path, workload, out)
    document = _answer(out, workload, costs, target_p95, target_tier, max_workers, videos, gpu_hour_price)
    if compare_step_scheduling:
        document["step_scheduling_comparison"] = _compare_step_scheduling(out, workload, costs)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"cost_model": cost_source, **document}, indent=2))
        out.print(f"report written to {json_path}")


def _answer(
    out: Console,
    workload: Workload,
    costs: CostModel,
    target_p95: float | None,
    target_tier: str | None,
    max_workers: int,
    videos: int | None,
    gpu_hour_price: float | None,
) -> dict[str, Any]:
    """Simulate, answer the questions asked, print the tables; return the report for --json."""
    from reelserve.planning.capacity import estimate_batch_cost, find_workers
    from reelserve.planning.simulate import simulate

    report = simulate(workload, costs)
    out.print(_workload_line(workload), markup=False, highlight=False)
    out.print(_simulation_table(report))
    search = batch_cost = None
    if target_p95 is not None:
        search = find_workers(workload, costs, target_p95, tier=target_tier, max_workers=max_workers)
        out.print(_search_table(search, workload))
    if videos is not None:
        batch_cost = estimate_batch_cost(workload, costs, videos, gpu_hour_price)
        out.print(_batch_cost_table(batch_cost))
    return {
        "workload": workload.model_dump(mode="json"),
        "simulation": report.model_dump(mode="json"),
        "worker_search": search.model_dump(mode="json") if search else None,
        "batch_cost": batch_cost.model_dump(mode="json") if batch_cost else None,
    }


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _build_workload(
    path: Path | None,
    top_level: dict[str, Any],
    server: dict[str, Any],
    mix: str | None,
    guidance: float | None,
    tier_mix: str | None,
) -> Workload:
    """The file's workload (or the defaults) with every flag that was given (not None) applied on top."""
    base = Workload.from_file(path) if path else Workload()
    data = base.model_dump()
    # The server's defaults, unless the file says otherwise (a flag, applied below, wins over both).
    data["server"].update({name: True for name in STEP_SCHEDULING if name not in base.server.model_fields_set})
    if mix is not None:
        data["mix"] = [
            shape.model_dump() for shape in parse_mix(mix, guidance if guidance is not None else 5.0)
        ]
    elif guidance is not None:
        data["mix"] = [{**shape, "guidance": guidance} for shape in data["mix"]]
    if tier_mix is not None:
        data["tier_mix"] = parse_tier_mix(tier_mix)
    data.update({name: value for name, value in top_level.items() if value is not None})
    data["server"].update({name: value for name, value in server.items() if value is not None})
    return Workload.checked(data)


def _load_cost_model(path: Path, workload: Workload, out: Console) -> tuple[CostModel, dict[str, Any]]:
    from reelserve.engine.cost_model import CostModel

    models = sorted({shape.model or workload.model for shape in workload.mix})
    try:
        costs = CostModel.load(path)
    except FileNotFoundError:
        warning = (
            f"NO COST MODEL at {path}: durations come from the built-in prior (a tiny model on CPU), "
            "not from your hardware. Run the server to learn one (it saves <data_dir>/cost_model.json) "
            "or pass --cost-model."
        )
        out.print(f"WARNING: {warning}", style="bold red", markup=False)
        return CostModel(), {"path": str(path), "source": "prior", "observations": 0, "warnings": [warning]}
    except ValueError as exc:
        _fail(str(exc))
    warnings = [
        f"the cost model at {path} has never seen model {name!r}: its durations come from the prior"
        for name in models
        if costs.observations(name) == 0
    ]
    for warning in warnings:
        out.print(f"WARNING: {warning}", style="bold yellow", markup=False)
    source = {"path": str(path), "source": "file", "observations": costs.observations(), "warnings": warnings}
    return costs, source


def _workload_line(workload: Workload) -> str:
    mix = ", ".join(f"{shape.label()}:{shape.weight:g}" for shape in workload.mix)
    tiers = ", ".join(f"{name}:{weight:g}" for name, weight in workload.tier_mix.items())
    server = workload.server
    return (
        f"workload: {workload.rate_per_min:g} req/min ({workload.profile}), model {workload.model}, "
        f"mix [{mix}], repeats {workload.repeat_rate:.0%}, tiers [{tiers}], "
        f"batch ≤ {server.max_batch_size} waiting {server.max_wait_s * 1000:g} ms, "
        f"continuous batching {_on(server.continuous_batching)}, preemption {_on(server.preemption)}, "
        f"{workload.requests} requests, seed {workload.seed}"
    )


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _compare_step_scheduling(out: Console, workload: Workload, costs: CostModel) -> dict[str, Any]:
    """The same arrivals with continuous batching and preemption both off and both on; the two
    reports, for --json."""
    from reelserve.planning.simulate import generate_arrivals, simulate

    arrivals = generate_arrivals(workload)
    reports = {}
    for name, on in (("off", False), ("on", True)):
        server = workload.server.model_copy(update=dict.fromkeys(STEP_SCHEDULING, on))
        reports[name] = simulate(workload.model_copy(update={"server": server}), costs, arrivals=arrivals)
    out.print(_comparison_table(reports["off"], reports["on"]))
    return {name: report.model_dump(mode="json") for name, report in reports.items()}


def _comparison_table(off: PlanReport, on: PlanReport) -> Table:
    table = Table(
        "tier", "p50 s off", "p50 s on", "p95 s off", "p95 s on", "done/s off", "done/s on",
        title=f"step scheduling (continuous batching and preemption) off vs on, same arrivals: "
        f"utilisation {off.utilisation:.0%} vs {on.utilisation:.0%}",
    )
    for before, after in zip([*off.tiers, off.overall], [*on.tiers, on.overall], strict=True):
        table.add_row(
            before.name,
            f"{before.latency_s.p50:.2f}", f"{after.latency_s.p50:.2f}",
            f"{before.latency_s.p95:.2f}", f"{after.latency_s.p95:.2f}",
            f"{before.throughput_per_s:.3f}", f"{after.throughput_per_s:.3f}",
        )
    return table


def _simulation_table(report: PlanReport) -> Table:
    table = Table(
        "tier",
        "arrived",
        "done",
        "rejected",
        "cache hits",
        "p50 s",
        "p95 s",
        "p99 s",
        "p95 wait s",
        "late",
        "done/s",
        title=f"{report.workers} worker(s): utilisation {report.utilisation:.0%}, "
        f"mean batch {report.mean_batch_size:.2f}, {report.simulated_s:.0f} s simulated",
    )
    for tier in [*report.tiers, report.overall]:
        latency = tier.latency_s
        table.add_row(
            tier.name,
            str(tier.arrived),
            str(tier.completed),
            str(tier.rejected),
            str(tier.cache_hits),
            f"{latency.p50:.2f}",
            f"{latency.p95:.2f}",
            f"{latency.p99:.2f}",
            f"{tier.queue_wait_s.p95:.2f}",
            str(tier.deadline_misses),
            f"{tier.throughput_per_s:.3f}",
        )
    return table


def _search_table(search: WorkerSearch, workload: Workload) -> Table:
    scope = f"{search.tier} " if search.tier else ""
    if search.workers is None:
        verdict = f"no worker count up to {search.max_workers} holds {scope}p95 ≤ {search.target_p95_s:g} s"
    else:
        verdict = f"{search.workers} worker(s) hold {scope}p95 ≤ {search.target_p95_s:g} s"
    table = Table(
        "workers",
        "p95 s",
        "done/s",
        "utilisation",
        "meets",
        title=f"{verdict} at {workload.rate_per_min:g} req/min",
    )
    for point in search.curve:
        table.add_row(
            str(point.workers),
            f"{point.p95_s:.2f}",
            f"{point.throughput_per_s:.3f}",
            f"{point.utilisation:.0%}",
            "yes" if point.meets_target else "no",
        )
    return table


def _batch_cost_table(cost: BatchCost) -> Table:
    table = Table("", "", title=f"{cost.videos} videos")
    rows: list[tuple[str, str]] = [
        ("unique (not cache hits)", str(cost.unique_videos)),
        ("pipeline calls", str(cost.batches)),
        ("GPU-hours", f"{cost.gpu_hours:.4f}"),
        ("GPU-seconds per video", f"{cost.gpu_seconds_per_video:.3f}"),
        (f"wall clock on {cost.workers} worker(s)", f"{cost.wall_clock_s:.0f} s"),
    ]
    if cost.cost is not None and cost.cost_per_video is not None:
        rows += [
            (f"cost at {cost.gpu_hour_price:g}/GPU-hour", f"{cost.cost:.2f}"),
            ("cost per video", f"{cost.cost_per_video:.5f}"),
        ]
    for row in rows:
        table.add_row(*row)
    return table
