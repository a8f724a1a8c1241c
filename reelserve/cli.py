"""The ``reelserve`` command: serve, api, worker, generate, models."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import sys
import time
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reelserve.cache_cli import app as cache_app
from reelserve.loadgen.cli import app as bench_app
from reelserve.micro.cli import app as micro_app
from reelserve.planning.cli import plan
from reelserve.quality.cli import quality
from reelserve.schemas import ReelserveError, VideoCreateRequest
from reelserve.schemas.inputs import Uploads
from reelserve.settings import Settings

app = typer.Typer(help="reelserve: an inference server for text-to-video diffusion models.", no_args_is_help=True)
console = Console(stderr=True)
app.add_typer(micro_app, name="micro")
app.add_typer(cache_app, name="cache")
bench_app.command("quality")(quality)
app.add_typer(bench_app, name="bench")
app.command("plan")(plan)


def _option_type(annotation: Any) -> Any:
    """Typer wants plain scalar types; pydantic validates the real type afterwards."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args else annotation
    return base if base in (int, float, bool) else str


def _run(role: str, **flags: Any) -> None:
    import uvicorn

    from reelserve.diagnostics import dump_stacks_on_sigusr1
    from reelserve.distributed import ApiServer, WorkerServer
    from reelserve.server import Server, serving_config
    from reelserve.several_models import SeveralModelsApi, SeveralModelsServer, SeveralModelsWorker

    overrides = {name: value for name, value in flags.items() if value is not None}
    if "model" in overrides:  # --model repeated: several models
        overrides["model"] = ",".join(overrides["model"])
    try:
        settings = Settings(**overrides)
        _check_port_free(settings.host, settings.port)
        several = len(settings.models) > 1
        roles = {"serve": (Server, SeveralModelsServer), "api": (ApiServer, SeveralModelsApi),
                 "worker": (WorkerServer, SeveralModelsWorker)}
        server = roles[role][several](settings)
    except ValidationError as exc:
        for error in exc.errors():  # one line a bad flag, named as typed
            where = "-".join(str(part) for part in error["loc"]).replace("_", "-")
            message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own words
            said = f"--{where}: {message}; got {error['input']!r}" if where else message
            console.print(f"[red]error:[/red] {escape(said)}")
        raise typer.Exit(2) from None
    except (ValueError, ReelserveError) as exc:  # ValueError: a setting's own check, or the port
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _quiet_logs(settings.log_level, model_bars=server.runs_model)
    dump_stacks_on_sigusr1()
    what = {"serve": f"serving [bold]{', '.join(settings.models)}[/bold]", "api": "API (jobs on Redis)",
            "worker": f"worker of [bold]{settings.model}[/bold] (ops port)"}[role]
    console.print(f"reelserve {what} on http://{settings.host}:{settings.port}")
    uvicorn.Server(serving_config(server.app, settings)).run()


def _quiet_logs(level: str, model_bars: bool = True) -> None:
    """A server's log: uvicorn's lines plus reelserve's own (one a finished job), and no third-party
    progress bars (``model_bars``: for a process that loads a model; the API role imports neither
    library, and must not for this)."""
    if model_bars:
        _no_third_party_bars()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    ours = logging.getLogger("reelserve")
    ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if level == "trace" else level.upper())
    ours.propagate = False


def _no_third_party_bars() -> None:
    """diffusers and transformers draw progress bars while loading weights: clutter in a server's log,
    and a second bar above `generate`'s own."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _check_port_free(host: str, port: int) -> None:
    """Fail before saying "serving" (and before loading anything) when the port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another program holds the port; "
                "choose another with --port (or REELSERVE_PORT), or stop the other server"
            ) from None


def _serve(**flags: Any) -> None:
    _run("serve", **flags)


def _api(**flags: Any) -> None:
    _run("api", **flags)


def _worker(**flags: Any) -> None:
    _run("worker", **flags)


def _shown_default(default: Any) -> str:
    """A default as --help shows it: a list by its items' names (tiers, degrade levels), else as text."""
    if isinstance(default, list | tuple):
        return ",".join(str(getattr(item, "name", item)) for item in default) or "(none)"
    return "(none)" if default is None or default == {} else str(default)


def _serve_signature() -> inspect.Signature:
    """One flag per Settings field; unset flags fall back to REELSERVE_* env vars, then defaults."""
    params = []
    for name, field in Settings.model_fields.items():
        kind = list[str] if name == "model" else _option_type(field.annotation)  # --model repeats
        flag = f"--{name.replace('_', '-')}"
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        # escape(): Rich would read "[default: x]" as a style tag and drop it from --help.
        shown = _shown_default(default)
        option = typer.Option(None, *decls, help=escape(f"{field.description} [default: {shown}]"), show_default=False)
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)
        )
    return inspect.Signature(params)


for _command in (_serve, _api, _worker):
    _command.__signature__ = _serve_signature()  # type: ignore[attr-defined]
app.command("serve", help="Start the HTTP server. Every flag is also a REELSERVE_* env var.")(_serve)
app.command(
    "api", help="Distributed mode: a stateless HTTP API on Redis (needs --redis-url); runs no model."
)(_api)
app.command(
    "worker", help="Distributed mode: load --model, then pull and run jobs from Redis; --port serves /metrics, /healthz, /readyz."
)(_worker)


@app.command()
def models() -> None:
    """List the model registry (reads the table only: no framework import, no weights)."""
    from reelserve.models.specs import list_specs

    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    for name in ("default clip", "largest", "steps"):
        table.add_column(name, no_wrap=True)
    for spec in list_specs():
        lim = spec.limits
        table.add_row(
            spec.name,
            f"{lim.default_width}x{lim.default_height} {lim.default_frames}f {lim.default_fps}fps",
            f"{lim.max_width}x{lim.max_height} {lim.max_frames}f",
            f"{lim.default_steps} (max {lim.max_steps})",
        )
    out = Console()
    out.print(table)
    for spec in list_specs():
        source = "in the package" if spec.name == "micro" else spec.default_source or "built in code"
        out.print(f"[bold]{spec.name}[/bold] (weights: {escape(source)}): {escape(spec.description)}")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What the video shows.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the MP4.")] = Path("out.mp4"),
    model: Annotated[str, typer.Option(help="Model name.")] = "micro",
    model_path: Annotated[str | None, typer.Option(help="Local dir or hub id.")] = None,
    size: Annotated[str | None, typer.Option(help="WxH.")] = None,
    num_frames: int | None = None,
    seconds: float | None = None,
    fps: int | None = None,
    steps: Annotated[int | None, typer.Option("--steps", help="num_inference_steps")] = None,
    guidance_scale: float | None = None,
    guidance_scale_2: float | None = None,
    flow_shift: Annotated[float | None, typer.Option(help="The sampler's timestep shift (default: the model's).")] = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    image: Annotated[Path | None, typer.Option(help="A first frame (PNG, JPEG, WebP) for a model that takes one.")] = None,
    video: Annotated[Path | None, typer.Option(help="A clip to re-draw (video to video), for a model that takes one.")] = None,
    input_fit: Annotated[str | None, typer.Option(help="crop, pad or resize: how an image or clip of another size "
                                                 "becomes the video's (required when the sizes differ).")] = None,
    strength: Annotated[float | None, typer.Option(help="How much of the --video to re-draw (0-1].")] = None,
    device: str = "auto",
    dtype: str = "auto",
    cpu_threads: Annotated[
        int | None, typer.Option(min=1, help="Torch's CPU threads; unset: the cores this process may use that "
                                 "are idle now (sampled for 0.1 s).")
    ] = None,
) -> None:
    """Generate one video in-process, with a progress bar; prints the path and the timings."""
    import torch

    from reelserve.accel.options import SERVING_DEFAULTS
    from reelserve.engine.runner import PipelineRunner
    from reelserve.models import LoadOptions, get_spec, load_model
    from reelserve.models.options import idle_cores
    from reelserve.video import encode_mp4

    try:
        spec = get_spec(model)
        request = VideoCreateRequest(
            prompt=prompt, negative_prompt=negative_prompt, size=size, num_frames=num_frames, seconds=seconds,
            fps=fps, num_inference_steps=steps, guidance_scale=guidance_scale,
            guidance_scale_2=guidance_scale_2, flow_shift=flow_shift, seed=seed, input_fit=input_fit, strength=strength,
        )
        uploads = Uploads(input_reference=image.read_bytes() if image else None,
                          input_video=video.read_bytes() if video else None)
        params, inputs = _resolved(request, uploads, spec, model_path)
        # What a server runs a lone request with: its default accelerations, and every core that is free.
        options = LoadOptions(device=device, dtype=dtype, path=model_path,  # type: ignore[arg-type]
                              cpu_threads=cpu_threads or idle_cores(), accelerations=SERVING_DEFAULTS)
        started = time.perf_counter()
        _no_third_party_bars()
        loaded = load_model(spec.name, options)
    except (ValidationError, ReelserveError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    load_s = time.perf_counter() - started
    runner = PipelineRunner(loaded.pipeline, loaded.device, loaded.max_sequence_length, accelerated=loaded.accelerated,
                            inputs=inputs)
    columns = (TextColumn("denoising"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("steps", total=params.num_inference_steps)
        outcome = runner.run([("cli", params)], on_step=lambda _ids, step, _n: bar.update(task, completed=step))
    started = time.perf_counter()
    output.write_bytes(encode_mp4(outcome.frames["cli"], params.fps))
    encode_s = time.perf_counter() - started
    typer.echo(str(output))
    typer.echo(
        f"model={spec.name} size={params.size} frames={params.num_frames} steps={params.num_inference_steps} "
        f"seed={params.seed} threads={torch.get_num_threads()} load_s={load_s:.2f} inference_s={outcome.inference_s:.2f} encode_s={encode_s:.2f}"
    )


def _resolved(request: VideoCreateRequest, uploads: Uploads, spec: Any, model_path: str | None) -> tuple[Any, Any]:
    """The request as a server resolves it (its inputs checked, fitted and digested: the same refusals), and
    where the row reads its first frame or clip from: a scratch storage (None without inputs)."""
    import asyncio
    import atexit
    import shutil
    import tempfile

    from reelserve.engine.request_resolution import RequestResolver
    from reelserve.engine.row_inputs import RowInputs
    from reelserve.models.specs import weights_limits
    from reelserve.storage.local import LocalStorage

    scratch = Path(tempfile.mkdtemp(prefix="reelserve-generate-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    storage = LocalStorage(scratch)
    resolver = RequestResolver(spec.name, weights_limits(spec, model_path), storage)
    params, staged = asyncio.run(resolver.create(request, uploads, None))
    if not staged:
        return params, None
    staged.store(storage, "cli")  # the row's key: what RowInputs reads it back under
    return params, RowInputs(storage)


# Commands that choose their threads for the machine as it is: the servers measure at warm-up,
# `generate` counts the idle cores. They keep libgomp's short spin.
MEASURING_COMMANDS = frozenset({"serve", "worker", "generate"})


def main() -> None:
    # Passive waiting for the other one-shot commands: libgomp's worker threads otherwise spin
    # between parallel regions, and on a machine whose cores are busy elsewhere a spinning thread
    # steals the core its partner needs: `reelserve generate` took 2.5-3x as long beside one busy
    # core (docs/benchmarks.md, "A busy machine"). Not for the measuring commands: passive waiting
    # wakes every thread at every parallel region, and a batch of four micro clips took 3.05 s with
    # it against 1.60 s with libgomp's default short spin (bench/cpu_threads.py, "The hot path");
    # they give a busy machine fewer threads instead. Read once when torch loads libgomp, so it is
    # set before any import of torch; a value the user exported wins.
    if sys.argv[1:2] == [] or sys.argv[1] not in MEASURING_COMMANDS:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
