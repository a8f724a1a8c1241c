"""``reelserve plan``'s step scheduling flags: on by default as in the server, a workload file's value
kept unless a flag overrides it, and ``--compare-step-scheduling`` replaying the arrivals both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.engine.cost_model import CostModel
from reelserve.planning.simulate import simulate
from reelserve.planning.workload import Workload

runner = CliRunner()
# Two tiers, a shape that can join another's batches (same size, fewer steps) and one that cannot.
BUSY = ["--rate", "90", "--requests", "150", "--seed", "4", "--mix", "64x64x17x25,64x64x17x8,128x128x17x25",
        "--tier-mix", "realtime:0.3,standard:0.7"]


def plan(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    report = tmp_path / "plan.json"
    result = runner.invoke(app, ["plan", *BUSY, "--cost-model", str(tmp_path / "absent.json"),
                                 "--json", str(report), *args])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(report.read_text())


def step_settings(document: dict[str, Any]) -> tuple[bool, bool]:
    server = document["workload"]["server"]
    return server["continuous_batching"], server["preemption"]


def test_step_scheduling_is_on_by_default_as_in_the_server(tmp_path: Path) -> None:
    output, document = plan(tmp_path)
    assert step_settings(document) == (True, True)
    assert "continuous batching on, preemption on" in output
    workload = Workload.model_validate(document["workload"])
    assert simulate(workload, CostModel()).model_dump(mode="json") == document["simulation"]


def test_flags_turn_it_off(tmp_path: Path) -> None:
    output, document = plan(tmp_path, "--no-continuous-batching", "--no-preemption")
    assert step_settings(document) == (False, False)
    assert "continuous batching off, preemption off" in output


def test_a_workload_files_value_holds_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "workload.json"
    path.write_text(json.dumps({"server": {"preemption": False}}))
    _, document = plan(tmp_path, "--workload", str(path))
    assert step_settings(document) == (True, False)  # the file's preemption, the server's default joining
    _, document = plan(tmp_path, "--workload", str(path), "--preemption", "--no-continuous-batching")
    assert step_settings(document) == (False, True)


def test_compare_replays_the_same_arrivals_off_and_on(tmp_path: Path) -> None:
    output, document = plan(tmp_path, "--compare-step-scheduling")
    assert "step scheduling (continuous batching and preemption) off vs on" in output
    assert "p95 s off" in output and "done/s on" in output
    comparison = document["step_scheduling_comparison"]
    workload = Workload.model_validate(document["workload"])
    for name, on in (("off", False), ("on", True)):
        server = workload.server.model_copy(update={"continuous_batching": on, "preemption": on})
        expected = simulate(workload.model_copy(update={"server": server}), CostModel())
        assert comparison[name] == expected.model_dump(mode="json")
    assert comparison["on"] == document["simulation"]  # the run asked for is the "on" one
    off, on = comparison["off"], comparison["on"]
    assert off["overall"]["arrived"] == on["overall"]["arrived"] == 150
    assert off["overall"]["latency_s"] != on["overall"]["latency_s"]  # busy enough for joins and preemption to matter
