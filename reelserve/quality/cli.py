"""``reelserve bench quality``: the acceleration quality harness on the micro model."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def quality(
    out: Annotated[Path, typer.Option(help="Directory for quality.md, quality.json and quality.png.")] = Path("quality"),
    configs: Annotated[
        str | None, typer.Option(help="Comma-separated configuration names (default: all); see --list.")
    ] = None,
    prompts: Annotated[int | None, typer.Option(min=1, help="Use the first N held-out prompts (default: all 21).")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1",
    steps: Annotated[int, typer.Option(min=1, help="Baseline denoising steps.")] = 25,
    batch: Annotated[int, typer.Option(min=1, help="Clips per pipeline call.")] = 6,
    sweep: Annotated[bool, typer.Option(help="Sweep each step cache's knob instead (calibration).")] = False,
    list_configs: Annotated[bool, typer.Option("--list", help="List the configurations and exit.")] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 when a safe configuration breaks its bounds.")] = True,
) -> None:
    """Run the held-out prompts under each acceleration; report speed-up, PSNR/SSIM, adherence, skips."""
    import diffusers

    from reelserve.micro.dataset import eval_prompts
    from reelserve.quality.harness import ALL_CONFIGURATIONS, Workload, gate, run, sweep_configurations
    from reelserve.quality.report import table, write

    diffusers.utils.logging.disable_progress_bar()  # one line per configuration is enough
    available = list(sweep_configurations() if sweep else ALL_CONFIGURATIONS)
    if list_configs:
        for config in available:
            console.print(f"{config.name}: {', '.join(config.accelerations.describe()) or 'eager'}"
                          f"{' (safe)' if config.safe else ''}")
        return
    chosen = available
    if configs:
        names = [name.strip() for name in configs.split(",") if name.strip()]
        unknown = [n for n in names if n not in {c.name for c in available}]
        if unknown:
            raise typer.BadParameter(
                f"unknown configuration(s) {unknown}; available: {[c.name for c in available]}", param_hint="'--configs'"
            )
        chosen = [c for c in available if c.name in names]
    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        raise typer.BadParameter("seeds must be comma-separated integers", param_hint="'--seeds'") from None
    workload = Workload(eval_prompts()[:prompts], seed_list, steps, batch=batch)
    baseline, outcomes = run(chosen, workload, out, on_config=lambda c: console.print(f"measuring {c.name}"))
    failures = gate(outcomes, baseline)
    command = "reelserve bench quality " + shlex.join(sys.argv[3:]) if len(sys.argv) > 2 else "reelserve bench quality"
    paths = write(out, baseline, outcomes, workload, failures, command)
    print(table(baseline, outcomes))
    console.print("wrote " + ", ".join(str(p) for p in paths))
    for failure in failures:
        console.print(f"[red]gate:[/red] {failure}")
    if failures and check:
        raise typer.Exit(1)
