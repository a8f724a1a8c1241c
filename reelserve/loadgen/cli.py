"""``reelserve bench``: load against a running server."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks against a running server.", no_args_is_help=True)


@app.command()
def load() -> None:
    """Replay a workload against a running server."""
    raise NotImplementedError
