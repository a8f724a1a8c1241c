"""The CI quality gate: the safe configurations, on a reduced held-out set, stay within their bounds."""

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.micro.dataset import eval_prompts
from reelserve.quality.harness import ALL_CONFIGURATIONS, Outcome, Workload, gate, run
from reelserve.quality.report import write

# Four held-out prompts at seed 0 (12 attribute readings), half the serving steps: about a minute.
WORKLOAD = Workload(eval_prompts()[:4], seeds=(0,), steps=12, batch=4)
SAFE = [c for c in ALL_CONFIGURATIONS if c.safe]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Outcome, list[Outcome]]:
    return run(SAFE, WORKLOAD, tmp_path_factory.mktemp("quality"))


def test_safe_configurations_are_the_exact_ones_and_the_presets() -> None:
    names = {c.name for c in SAFE}
    assert {"cfg_batching", "shared_time_embedding", "onnx", "channels_last", "fused_ffn", "preset quality", "preset balanced",
            "preset fast"} <= names
    assert all(c.psnr_floor is not None for c in SAFE)


def test_every_safe_configuration_passes_the_gate(measured: tuple[Outcome, list[Outcome]]) -> None:
    baseline, outcomes = measured
    assert gate(outcomes, baseline) == []
    assert {o.config.name for o in outcomes} == {c.name for c in SAFE}


def test_exact_configurations_match_the_baseline(measured: tuple[Outcome, list[Outcome]]) -> None:
    baseline, outcomes = measured
    by_name = {o.config.name: o for o in outcomes}
    for name in ("cfg_batching", "onnx", "preset quality"):
        assert by_name[name].psnr >= 60, name
        assert by_name[name].adherence == baseline.adherence, name


def test_presets_skip_work_or_steps(measured: tuple[Outcome, list[Outcome]]) -> None:
    baseline, outcomes = measured
    by_name = {o.config.name: o for o in outcomes}
    fast, balanced = by_name["preset fast"], by_name["preset balanced"]
    assert fast.steps < balanced.steps == baseline.steps
    for preset in (fast, balanced):
        assert preset.skipped_passes is not None and preset.skipped_passes >= 1, preset.config.name


def test_the_gate_fails_a_configuration_that_breaks_its_bound(measured: tuple[Outcome, list[Outcome]]) -> None:
    baseline, outcomes = measured
    fast = next(o for o in outcomes if o.config.name == "preset fast")
    too_strict = dataclasses.replace(fast, config=dataclasses.replace(fast.config, psnr_floor=fast.psnr + 1))
    assert gate([too_strict], baseline) == [
        f"preset fast: PSNR {fast.psnr:.1f} dB is below its floor {fast.psnr + 1:g} dB"
    ]
    worse = dataclasses.replace(fast, adherence={k: v - 3 for k, v in baseline.adherence.items()})
    assert any("mean adherence fell" in failure for failure in gate([worse], baseline))


def test_report_files(measured: tuple[Outcome, list[Outcome]], tmp_path: Path) -> None:
    baseline, outcomes = measured
    md, js, png = write(tmp_path, baseline, outcomes, WORKLOAD, [], "test")
    data = json.loads(js.read_text())
    assert [row["name"] for row in data["configurations"]] == [o.config.name for o in outcomes]
    assert data["baseline"]["speedup"] is None
    assert all(row["psnr"] is not None and row["seconds_per_video"] > 0 for row in data["configurations"])
    assert "| preset fast |" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_quality_md_and_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "quality", "--out", str(tmp_path), "--configs", "cfg_batching", "--prompts", "1", "--seeds", "0",
         "--steps", "4", "--batch", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "| cfg_batching |" in (tmp_path / "quality.md").read_text()
    assert json.loads((tmp_path / "quality.json").read_text())["gate_failures"] == []


def test_cli_names_an_unknown_configuration() -> None:
    result = CliRunner().invoke(app, ["bench", "quality", "--configs", "warp-drive"])
    assert result.exit_code == 2
    assert "warp-drive" in result.output and "cfg_batching" in result.output
