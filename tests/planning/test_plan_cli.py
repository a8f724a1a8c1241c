"""``reelserve plan`` end to end through the real CLI app."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.engine.cost_model import CallTiming, CostModel
from reelserve.planning.simulate import simulate
from reelserve.planning.workload import Workload
from reelserve.schemas import GenerationParams

runner = CliRunner()
QUICK = ["--rate", "30", "--requests", "200", "--seed", "1"]


def saved_cost_model(path: Path, slowdown: float = 2.0) -> Path:
    """A cost model that has seen the micro model run twice as slow as the prior says."""
    costs, prior, rng = CostModel(), CostModel(), random.Random(0)
    for batch in (1, 2, 3, 4) * 5:
        params = GenerationParams(
            model="micro",
            prompt="p",
            width=64,
            height=64,
            num_frames=17,
            fps=8,
            num_inference_steps=25,
            guidance_scale=5.0,
            seed=0,
        )
        step_s = slowdown * prior.predict_step(params, batch) * (1 + rng.gauss(0, 0.02))
        overhead_s = slowdown * prior.predict_overhead(params, batch)
        costs.observe(params, CallTiming(batch, 25, step_s, overhead_s, 25 * step_s + overhead_s))
    costs.save(path)
    return path


def plan(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["plan", *args])
    return result.exit_code, result.output


def test_workers_question_writes_a_json_report(tmp_path: Path) -> None:
    report_path = tmp_path / "out" / "plan.json"
    code, output = plan(
        "--workers",
        "2",
        *QUICK,
        "--tier-mix",
        "realtime:0.2,standard:0.8",
        "--cost-model",
        str(tmp_path / "absent.json"),
        "--json",
        str(report_path),
    )
    assert code == 0, output
    assert "NO COST MODEL" in output and "prior" in output
    assert "2 worker(s)" in output and "realtime" in output
    document = json.loads(report_path.read_text())
    assert document["cost_model"]["source"] == "prior"
    assert document["simulation"]["workers"] == 2
    assert {t["name"] for t in document["simulation"]["tiers"]} == {"realtime", "standard"}
    assert document["simulation"]["overall"]["arrived"] == 200
    assert document["worker_search"] is None and document["batch_cost"] is None
    # the same workload through the API gives the same numbers
    workload = Workload.model_validate(document["workload"])
    assert simulate(workload, CostModel()).model_dump(mode="json") == document["simulation"]


def test_default_cost_model_path_missing_is_loud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = plan(*QUICK)
    assert code == 0, output
    assert "WARNING: NO COST MODEL at reelserve-data/cost_model.json" in output


def test_saved_cost_model_is_used(tmp_path: Path) -> None:
    path = saved_cost_model(tmp_path / "cost_model.json")
    report_path = tmp_path / "plan.json"
    code, output = plan(*QUICK, "--cost-model", str(path), "--json", str(report_path), "--videos", "100")
    assert code == 0, output
    assert "WARNING" not in output
    document = json.loads(report_path.read_text())
    assert document["cost_model"] == {"path": str(path), "source": "file", "observations": 20, "warnings": []}
    code, output = plan(
        *QUICK, "--cost-model", str(tmp_path / "none.json"), "--json", str(report_path), "--videos", "100"
    )
    assert code == 0, output
    prior = json.loads(report_path.read_text())
    assert document["batch_cost"]["gpu_seconds"] == pytest.approx(
        2 * prior["batch_cost"]["gpu_seconds"], rel=0.1
    )


def test_unseen_model_warns(tmp_path: Path) -> None:
    path = saved_cost_model(tmp_path / "cost_model.json")
    code, output = plan(*QUICK, "--cost-model", str(path), "--model", "tiny")
    assert code == 0, output
    assert "never seen model 'tiny'" in output


def test_target_p95_finds_the_fewest_workers(tmp_path: Path) -> None:
    report_path = tmp_path / "plan.json"
    code, output = plan(
        "--rate",
        "300",
        "--requests",
        "400",
        "--mix",
        "64x64x17x25:0.7,128x128x17x25:0.3",
        "--target-p95",
        "15",
        "--cost-model",
        str(tmp_path / "none.json"),
        "--json",
        str(report_path),
    )
    assert code == 0, output
    search = json.loads(report_path.read_text())["worker_search"]
    n = search["workers"]
    assert f"{n} worker(s) hold p95 ≤ 15 s" in output
    by_workers = {point["workers"]: point for point in search["curve"]}
    assert by_workers[n]["p95_s"] <= 15 < by_workers[n - 1]["p95_s"]


def test_videos_question_prices_the_batch(tmp_path: Path) -> None:
    report_path = tmp_path / "plan.json"
    code, output = plan(
        *QUICK,
        "--videos",
        "1000",
        "--gpu-hour-price",
        "2.5",
        "--repeat-rate",
        "0.2",
        "--max-batch",
        "8",
        "--cost-model",
        str(tmp_path / "none.json"),
        "--json",
        str(report_path),
    )
    assert code == 0, output
    cost = json.loads(report_path.read_text())["batch_cost"]
    assert cost["videos"] == 1000 and cost["unique_videos"] == 800 and cost["batches"] == 100
    assert cost["cost"] == pytest.approx(cost["gpu_hours"] * 2.5)
    assert "GPU-seconds per video" in output and "cost per video" in output


def test_workload_file_with_flag_overrides(tmp_path: Path) -> None:
    workload_path = tmp_path / "workload.json"
    workload_path.write_text(
        json.dumps(
            {
                "rate_per_min": 20,
                "mix": [{"width": 128, "height": 128, "frames": 9, "steps": 10}],
                "tier_mix": {"batch": 1},
                "requests": 50,
                "server": {"workers": 3, "max_wait_s": 0.2},
            }
        )
    )
    report_path = tmp_path / "plan.json"
    code, output = plan(
        "--workload",
        str(workload_path),
        "--rate",
        "40",
        "--max-wait-ms",
        "100",
        "--guidance",
        "1",
        "--cost-model",
        str(tmp_path / "none.json"),
        "--json",
        str(report_path),
    )
    assert code == 0, output
    document = json.loads(report_path.read_text())
    workload = document["workload"]
    assert workload["rate_per_min"] == 40 and workload["requests"] == 50
    assert workload["server"]["workers"] == 3 and workload["server"]["max_wait_s"] == pytest.approx(0.1)
    assert workload["mix"][0]["width"] == 128 and workload["mix"][0]["guidance"] == 1.0
    assert [t["name"] for t in document["simulation"]["tiers"]] == ["batch"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "64x64"], "WxHxFRAMESxSTEPS"),
        (["--tier-mix", "gold:1"], "unknown tiers"),
        (["--rate", "0"], "rate_per_min"),
        (["--profile", "step"], "needs step_rate_per_min"),
        (["--target-p95", "5", "--target-tier", "gold"], "no tier named"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = plan(*args, "--cost-model", str(tmp_path / "none.json"))
    assert code == 2
    assert message in output


def test_corrupt_cost_model_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "cost_model.json"
    path.write_text("{not json")
    code, output = plan(*QUICK, "--cost-model", str(path))
    assert code == 2
    assert "bad JSON" in output


def test_step_profile_flags(tmp_path: Path) -> None:
    report_path = tmp_path / "plan.json"
    code, output = plan(
        "--profile", "step", "--rate", "20", "--step-rate", "80", "--step-at", "60", "--requests", "100",
        "--cost-model", str(tmp_path / "none.json"), "--json", str(report_path),
    )
    assert code == 0, output
    workload = json.loads(report_path.read_text())["workload"]
    assert (workload["profile"], workload["step_rate_per_min"], workload["step_at_s"]) == ("step", 80, 60)
