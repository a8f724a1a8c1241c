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


def _bar_reporter(bar: Progress):
    """A training progress callback: a bar a stage, or a line every 50 steps in a log file."""
    tasks: dict[str, int] = {}

    def report(stage: str, step: int, total: int, loss: float | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, loss="")
        shown = "" if loss is None else f"loss {loss:.4f}"
        bar.update(tasks[stage], completed=step, loss=shown)
        if not console.is_terminal and (step % 50 == 0 or step == total):  # a log file gets lines, not a bar
            console.print(f"{stage} {step}/{total} {shown}", highlight=False)

    return report


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Directory to write the pipeline, training.json and checkpoint.pt to.")] = Path("micro-model"),
    resume: Annotated[
        Path | None, typer.Option(help="Continue the stopped run in this directory, with its own settings.")
    ] = None,
    seed: int = 0,
    vae_image_steps: Annotated[int | None, typer.Option(help="VAE training steps on single frames.")] = None,
    vae_steps: Annotated[int | None, typer.Option(help="VAE training steps on whole clips.")] = None,
    decoder_steps: Annotated[int | None, typer.Option(help="Decoder refinement steps (encoder frozen).")] = None,
    steps: Annotated[int | None, typer.Option(help="Transformer training steps.")] = None,
    batch: Annotated[int | None, typer.Option(help="Transformer batch size.")] = None,
    width: Annotated[int | None, typer.Option(help="Transformer width (a multiple of 32).")] = None,
    layers: Annotated[int | None, typer.Option(help="Transformer blocks.")] = None,
    lr: Annotated[float | None, typer.Option(help="Transformer learning rate.")] = None,
    first_frame_share: Annotated[float | None, typer.Option(help="Share of rows trained as image-to-video.")] = None,
    first_frame_caption_swap: Annotated[
        float | None, typer.Option(help="Share of image-to-video rows captioned with another shape and colour.")
    ] = None,
    temporal_weight: Annotated[float | None, typer.Option(help="Weight of the frame-difference loss.")] = None,
    latent_clips: Annotated[int | None, typer.Option(help="Clips encoded for the denoiser.")] = None,
    captions_per_scene: Annotated[int | None, typer.Option(help="Captions encoded per training scene.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option(help="Minutes between checkpoints.")] = None,
    vae_from: Annotated[
        Path | None, typer.Option(help="Start at the denoiser with the VAE and latents of another run (same VAE settings), "
                                       "or at encoding with the VAE of a trained model's directory.")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to train: cpu, cuda, cuda:1, ... (the same seed draws the same data).")] = "cpu",
) -> None:
    """Train the micro model from a seed (VAE, latents, denoiser, decoder) into OUT; resumable."""
    from reelserve.micro.train import TrainConfig, saved_config
    from reelserve.micro.train import train as run_training

    overrides = {
        "vae_image_steps": vae_image_steps, "vae_steps": vae_steps, "decoder_steps": decoder_steps, "steps": steps,
        "batch": batch, "width": width, "layers": layers, "lr": lr, "first_frame_share": first_frame_share,
        "first_frame_caption_swap": first_frame_caption_swap, "temporal_weight": temporal_weight, "latent_clips": latent_clips, "captions_per_scene": captions_per_scene,
        "threads": threads, "checkpoint_minutes": checkpoint_minutes,
    }
    if resume is not None:
        try:
            config = saved_config(resume)
        except FileNotFoundError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        out = resume
    else:
        config = TrainConfig(seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    with _progress() as bar:
        report = _bar_reporter(bar)
        try:
            summary = run_training(config, out, report, vae_from=vae_from, device=device)
        except ValueError as exc:  # a checkpoint of another configuration, or an unusable --vae-from
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    typer.echo(str(out))
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}))


@app.command()
def lora(
    recipe: Annotated[str, typer.Argument(help="outline (a style: hollow, larger shapes) or fast (4 unguided steps "
                                               "for 25 guided: a distillation).")],
    out: Annotated[Path, typer.Option(help="Directory for RECIPE.safetensors, RECIPE.json (for --adapters-dir) and "
                                           "the checkpoint; a stopped run in it is continued.")] = Path("micro-adapters"),
    base: Annotated[Path | None, typer.Option(help="The model to adapt (default: the committed weights).")] = None,
    seed: int = 0,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (alpha equals it).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    batch: Annotated[int | None, typer.Option(help="Clips a step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    latent_clips: Annotated[int | None, typer.Option(help="Styled clips encoded, or teacher samples drawn.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option(help="Minutes between checkpoints.")] = None,
) -> None:
    """Train a LoRA adapter of the micro model (a style, or a few-step distillation); resumable."""
    from reelserve.micro.lora_train import LoraTrainConfig, train_lora
    from reelserve.models.micro import MICRO_WEIGHTS

    overrides = {"rank": rank, "steps": steps, "batch": batch, "lr": lr, "latent_clips": latent_clips,
                 "threads": threads, "checkpoint_minutes": checkpoint_minutes}
    config = LoraTrainConfig(recipe=recipe, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    with _progress() as bar:
        report = _bar_reporter(bar)
        try:
            summary = train_lora(config, base or MICRO_WEIGHTS, out, report)
        except ValueError as exc:  # an unknown recipe, or a checkpoint of other settings
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    typer.echo(str(out / f"{recipe}.safetensors"))
    typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("config", "base")}))


@app.command("eval-adapter")
def evaluate_adapter(
    adapter: Annotated[Path, typer.Argument(help="The adapter's .safetensors file (its .json beside it, if any).")],
    scale: float = 1.0,
    model_path: Annotated[Path | None, typer.Option(help="Pipeline directory (default: the committed weights).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt (0, 1, ...).")] = 2,
    limit: Annotated[int | None, typer.Option(help="Only the first N held-out prompts.")] = None,
    sheet: Annotated[Path, typer.Option(help="Contact sheet PNG of the adapted clips.")] = Path("adapter-eval.png"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")] = None,
) -> None:
    """The held-out prompts with and without the adapter. A style: how many clips show it, and whether
    colour, motion and shape stay as prompted. A distillation (its .json recommends steps): accuracy and
    seconds a clip at its settings, against the model as served."""
    from reelserve.micro.adherence import GenerationSettings
    from reelserve.micro.dataset import eval_prompts
    from reelserve.models import LoadOptions, load_model

    if not adapter.is_file():
        console.print(f"[red]error:[/red] no adapter file at {adapter}")
        raise typer.Exit(2)
    sidecar = adapter.with_suffix(".json")
    recommended = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    loaded = load_model("micro", LoadOptions(path=str(model_path) if model_path else None))
    settings = GenerationSettings(seeds=tuple(range(seeds)))
    judge_set = _judge_distillation if "steps" in recommended else _judge_style
    with _progress() as bar:
        task = bar.add_task("clips", total=None, loss="")
        on_clips = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        report, clips, labels = judge_set(loaded, adapter, scale, recommended, eval_prompts()[:limit], settings,
                                          on_clips)
    from reelserve.micro.contact_sheet import contact_sheet

    contact_sheet(clips, labels, sheet)
    typer.echo(f"contact sheet: {sheet}")
    if json_out:
        report = {"adapter": str(adapter), "scale": scale, "seeds": seeds, **report}
        json_out.write_text(json.dumps(report, indent=2) + "\n")


def _judge_style(loaded, adapter: Path, scale: float, recommended: dict, prompts, settings, on_clips):
    from reelserve.micro.adapter_eval import KEPT, evaluate_adapter

    base, adapted = evaluate_adapter(loaded.pipeline, loaded.max_sequence_length, adapter, scale, prompts, settings,
                                     on_clips)
    table = Table("reading", "without", f"with {adapter.stem} @ {scale:g}", title="adapter")
    table.add_row("outlined", f"{base.outlined:.1%}", f"{adapted.outlined:.1%}")
    table.add_row("hollowness", f"{base.hollowness:.3f}", f"{adapted.hollowness:.3f}")
    for name in KEPT:
        table.add_row(f"{name} kept", f"{base.kept[name]:.1%}", f"{adapted.kept[name]:.1%}")
    Console().print(table)
    labels = [f"{c.prompt.prompt} [seed {c.seed}] hollow {c.style.hollowness:.2f}" for c in adapted.clips]
    return {"without": base.as_json(), "with": adapted.as_json()}, [c.frames for c in adapted.clips], labels


def _judge_distillation(loaded, adapter: Path, scale: float, recommended: dict, prompts, settings, on_clips):
    from reelserve.micro.adapter_eval import evaluate_distillation

    runs = evaluate_distillation(loaded.pipeline, loaded.max_sequence_length, adapter, recommended, prompts,
                                 settings, on_clips)
    table = Table("run", "steps", "guidance", "calls a clip", "colour", "motion", "shape", "consistency",
                  "s a clip", title=f"distillation: {adapter.stem}")
    for run in runs:
        accuracy = run.report.accuracy
        table.add_row(run.label, str(run.steps), f"{run.guidance:g}", str(run.transformer_calls),
                      f"{accuracy['color']:.1%}", f"{accuracy['motion']:.1%}", f"{accuracy['shape']:.1%}",
                      f"{run.report.consistency:.3f}", f"{run.seconds_per_clip:.3f}")
    Console(width=max(Console().width, 110)).print(table)  # nine columns: a log file's 80 would wrap them
    fast = runs[-1].report.results
    labels = [_label(r) for r in fast]
    report = {"runs": [{"label": run.label, "steps": run.steps, "guidance": run.guidance,
                        "transformer_calls": run.transformer_calls, "seconds_per_clip": round(run.seconds_per_clip, 4),
                        **_as_json(run.report)} for run in runs]}
    return report, [r.frames for r in fast], labels


@app.command("eval")
def evaluate(
    model_path: Annotated[Path | None, typer.Option(help="Pipeline directory (default: the committed weights).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt (0, 1, ...).")] = 2,
    steps: int = 25,
    guidance_scale: float = 5.0,
    sheet: Annotated[Path, typer.Option(help="Contact sheet PNG; image-to-video gets NAME-i2v.png beside it.")] = Path("micro-eval.png"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts of each set (a quick look).")] = None,
    prompts: Annotated[
        str, typer.Option(help="Text-to-video prompts: held-out (unseen combinations and phrasings), seen (a control), "
                               "or paraphrase (only words no training caption has).")
    ] = "held-out",
    image_to_video: Annotated[
        bool, typer.Option("--image-to-video/--no-image-to-video", help="Also judge image-to-video (models that take a first frame).")
    ] = True,
) -> None:
    """Generate the evaluation sets and print per-attribute accuracy; write contact sheets."""
    from reelserve.micro.adherence import GenerationSettings
    from reelserve.micro.dataset import eval_prompts, paraphrase_prompts, seen_prompts
    from reelserve.models import LoadOptions, load_model

    sets = {"held-out": eval_prompts, "seen": seen_prompts, "paraphrase": paraphrase_prompts}
    if prompts not in sets:
        console.print(f"[red]error:[/red] --prompts must be one of {', '.join(sets)}; got {prompts!r}")
        raise typer.Exit(2)
    loaded = load_model("micro", LoadOptions(path=str(model_path) if model_path else None))
    loaded.pipeline.set_progress_bar_config(disable=True)
    settings = GenerationSettings(seeds=tuple(range(seeds)), steps=steps, guidance=guidance_scale)
    report = {"settings": {"seeds": list(settings.seeds), "steps": settings.steps, "guidance": settings.guidance}}
    report["text_to_video"] = _judge_set("text-to-video", loaded, settings, sets[prompts]()[:limit], sheet)
    if image_to_video and loaded.pipeline.config.expand_timesteps:
        i2v_sheet = sheet.with_name(f"{sheet.stem}-i2v{sheet.suffix}")
        report["image_to_video"] = _judge_set("image-to-video", loaded, settings, limit, i2v_sheet)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")


def _judge_set(title: str, loaded, settings, cases, sheet: Path) -> dict:
    """Generate and judge one set (text prompts, or for image-to-video the first-frame cases up to a
    limit), print its table, write its contact sheet; return its JSON."""
    from reelserve.micro.adherence import (
        ATTRIBUTES, FIRST_FRAME_ATTRIBUTES, evaluate_image_to_video, evaluate_pipeline,
    )
    from reelserve.micro.contact_sheet import contact_sheet
    from reelserve.micro.dataset import first_frame_prompts

    with _progress() as bar:
        task = bar.add_task(title[:9], total=None, loss="")
        on_clips = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if title == "image-to-video":
            attributes = FIRST_FRAME_ATTRIBUTES
            result = evaluate_image_to_video(loaded.pipeline, loaded.max_sequence_length, settings,
                                             first_frame_prompts()[:cases], on_clips)
        else:
            attributes = ATTRIBUTES
            result = evaluate_pipeline(loaded.pipeline, loaded.max_sequence_length, settings, cases, on_clips)
    table = Table("attribute", "accuracy", "correct / clips", title=title)
    for name in attributes:
        hits = sum(r.correct[name] for r in result.results)
        table.add_row(name, f"{result.accuracy[name]:.1%}", f"{hits} / {len(result.results)}")
    table.add_row("consistency", f"{result.consistency:.3f}", "mean over clips")
    Console().print(table)
    contact_sheet([r.frames for r in result.results], [_label(r) for r in result.results], sheet)
    typer.echo(f"contact sheet: {sheet}")
    return _as_json(result)


def _label(result) -> str:
    j = result.judgement
    marks = "".join("+" if ok else "-" for ok in result.correct.values())
    return f"{result.prompt.prompt} [seed {result.seed}] -> {j.color} {j.shape} {j.motion} {marks}"


def _as_json(report) -> dict:
    return {
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
