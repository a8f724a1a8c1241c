"""``reelserve micro train`` and ``reelserve micro eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

app = typer.Typer(help="Train and evaluate the micro model.", no_args_is_help=True)
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Directory to write the pipeline to.")] = Path("micro-model"),
    seed: int = 0,
    vae_image_steps: Annotated[int | None, typer.Option(help="VAE training steps on single frames.")] = None,
    vae_steps: Annotated[int | None, typer.Option(help="VAE training steps on whole clips.")] = None,
    decoder_steps: Annotated[int | None, typer.Option(help="Decoder refinement steps (encoder frozen).")] = None,
    steps: Annotated[int | None, typer.Option(help="Transformer training steps.")] = None,
    batch: Annotated[int | None, typer.Option(help="Transformer batch size.")] = None,
    latent_clips: Annotated[int | None, typer.Option(help="Clips encoded for stage two.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    vae_from: Annotated[
        Path | None, typer.Option(help="Skip the VAE stage: reuse the VAE of a run's output dir (before decoder refinement).")
    ] = None,
) -> None:
    """Train the micro model from a seed (VAE, then text encoder + transformer) and save it to OUT."""
    from reelserve.micro.train import TrainConfig
    from reelserve.micro.train import train as run_training

    overrides = {
        "vae_image_steps": vae_image_steps, "vae_steps": vae_steps, "decoder_steps": decoder_steps, "steps": steps, "batch": batch,
        "latent_clips": latent_clips, "threads": threads,
    }
    config = TrainConfig(seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, step: int, total: int, loss: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss="")
            bar.update(tasks[stage], completed=step, loss="" if loss is None else f"loss {loss:.4f}")

        summary = run_training(config, out, report, vae_from=vae_from)
    typer.echo(str(out))
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}))


@app.command("eval")
def evaluate(
    model_path: Annotated[Path | None, typer.Option(help="Pipeline directory (default: the committed weights).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt (0, 1, ...).")] = 2,
    steps: int = 25,
    guidance_scale: float = 5.0,
    sheet: Annotated[Path, typer.Option(help="Where to write the contact sheet PNG.")] = Path("micro-eval.png"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts (a quick look).")] = None,
    seen: Annotated[
        bool, typer.Option("--seen", help="Training combinations and phrasings instead of the held-out set (a control).")
    ] = False,
) -> None:
    """Generate the held-out prompt set and print per-attribute accuracy; write a contact sheet."""
    from reelserve.micro.adherence import ATTRIBUTES, GenerationSettings, evaluate_pipeline
    from reelserve.micro.contact_sheet import contact_sheet
    from reelserve.micro.dataset import eval_prompts, seen_prompts
    from reelserve.models import LoadOptions, load_model

    loaded = load_model("micro", LoadOptions(path=str(model_path) if model_path else None))
    loaded.pipeline.set_progress_bar_config(disable=True)
    settings = GenerationSettings(seeds=tuple(range(seeds)), steps=steps, guidance=guidance_scale)
    with _progress() as bar:
        task = bar.add_task("clips", total=None, loss="")
        report = evaluate_pipeline(
            loaded.pipeline,
            loaded.max_sequence_length,
            settings,
            prompts=(seen_prompts() if seen else eval_prompts())[:limit],
            on_clips=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table("attribute", "accuracy", "correct / clips")
    for name in ATTRIBUTES:
        hits = sum(r.correct[name] for r in report.results)
        table.add_row(name, f"{report.accuracy[name]:.1%}", f"{hits} / {len(report.results)}")
    table.add_row("consistency", f"{report.consistency:.3f}", "mean over clips")
    Console().print(table)
    labels = [_label(r) for r in report.results]
    contact_sheet([r.frames for r in report.results], labels, sheet)
    typer.echo(f"contact sheet: {sheet}")
    if json_out:
        json_out.write_text(json.dumps(_as_json(report, settings), indent=2) + "\n")


def _label(result) -> str:
    j = result.judgement
    marks = "".join("+" if ok else "-" for ok in result.correct.values())
    return f"{result.prompt.prompt} [seed {result.seed}] -> {j.color} {j.shape} {j.motion} {marks}"


def _as_json(report, settings) -> dict:
    return {
        "settings": {"seeds": list(settings.seeds), "steps": settings.steps, "guidance": settings.guidance},
        "accuracy": report.accuracy,
        "consistency": report.consistency,
        "clips": [
            {
                "prompt": r.prompt.prompt,
                "seed": r.seed,
                "intended": {"shape": r.prompt.shape, "color": r.prompt.color, "motion": r.prompt.motion},
                "read": {"shape": r.judgement.shape, "color": r.judgement.color, "motion": r.judgement.motion},
                "correct": r.correct,
            }
            for r in report.results
        ],
    }
