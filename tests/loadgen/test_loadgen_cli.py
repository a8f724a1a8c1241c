"""``reelserve bench load`` refuses bad flags before sending anything: exit 2, naming the flag."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reelserve.cli import app

runner = CliRunner()
# Port 9 (discard) on loopback: nothing listens, and none of these runs may get as far as connecting.
BASE = ["bench", "load", "--url", "http://127.0.0.1:9", "--max-requests", "1"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tier-mix", "realtime=0.2"], "--tier-mix"),
        (["--tier-mix", "realtime:lots"], "--tier-mix"),
        (["--tier-mix", "realtime:0"], "--tier-mix"),
        (["--deadline", "realtime"], "--deadline"),
        (["--deadline", "realtime:-5"], "--deadline"),
        (["--param", "num_inference_steps"], "--param"),
        (["--param", "prompt=hi"], "--param"),
        (["--rate", "0"], "--rate"),
        (["--repeat-rate", "1.5"], "--repeat-rate"),
        (["--profile", "sawtooth"], "--profile"),
        (["--profile", "step"], "--profile"),
        (["--url", "localhost:8000"], "--url"),
        (["--allow-degrade", "--allow-degrade-fraction", "0.5"], "--allow-degrade-fraction"),
        (["--allow-degrade-fraction", "2"], "--allow-degrade-fraction"),
    ],
)
def test_a_bad_flag_exits_2_naming_it(flags: list[str], named: str) -> None:
    result = runner.invoke(app, [*BASE, *flags])
    assert result.exit_code == 2, result.output
    assert f"'{named}'" in result.output, result.output
    assert "sent" not in result.output  # refused before any progress display
