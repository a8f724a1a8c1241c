"""``reelserve micro eval-adapter`` on the committed adapters, on one held-out prompt: a style is read
with and without it; a distillation is run as served, and at its own settings without and with it."""

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.micro.distill import STUDENT_STEPS, TEACHER_STEPS
from reelserve.models.micro import MICRO_ADAPTERS


def run(adapter: str, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["micro", "eval-adapter", str(MICRO_ADAPTERS / adapter), "--limit", "1",
                                      "--seeds", "1", "--json", str(out), "--sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "sheet.png").size[0] > 64
    return json.loads(out.read_text())


def test_a_style_is_read_with_and_without_it(tmp_path: Path) -> None:
    report = run("outline.safetensors", tmp_path)
    without, adapted = report["without"], report["with"]
    assert len(without["clips"]) == len(adapted["clips"]) == 1
    assert adapted["hollowness"] > without["hollowness"]  # the held-out prompt's clip, outlined
    assert set(adapted["kept"]) == {"color", "motion", "shape"}


def test_a_distillation_is_timed_at_its_settings_against_the_model_as_served(tmp_path: Path) -> None:
    runs = run("fast.safetensors", tmp_path)["runs"]
    assert [r["transformer_calls"] for r in runs] == [2 * TEACHER_STEPS, STUDENT_STEPS, STUDENT_STEPS]
    assert all(len(r["clips"]) == 1 and r["seconds_per_clip"] > 0 for r in runs)
    assert [(r["steps"], r["guidance"]) for r in runs] == [(TEACHER_STEPS, 5.0), (STUDENT_STEPS, 1.0), (STUDENT_STEPS, 1.0)]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["micro", "eval-adapter", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2 and "no adapter file" in result.output
