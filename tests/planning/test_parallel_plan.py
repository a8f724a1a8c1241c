"""The parallel layouts' predictions (``reelserve plan --parallel-layouts``): the FLOPs are the step's,
CFG halves a rank's work with nothing sent, a sequence split divides compute and sends what the
exchange needs, and the weights on each rank are the model's as diffusers builds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.gpu.step_timing import build_meta_transformer
from reelserve.cli import app
from reelserve.parallel.layout import ParallelLayout
from reelserve.planning.parallel import GPUS, predict, table, transformer_params
from reelserve.planning.wan_sizes import MODELS, T2V_A14B, forward_flops


def test_one_rank_computes_the_whole_guided_step() -> None:
    one = predict(T2V_A14B, "720p", ParallelLayout(), GPUS["H100"], efficiency=1.0)
    latent = T2V_A14B.latent_shape(1280, 720)
    flops = 2 * forward_flops(T2V_A14B.transformer, latent, T2V_A14B.text_len).total
    assert one.compute_s == pytest.approx(flops / 989e12)
    assert round(flops / 1e12) == 13047  # docs/gpu.md's A14B 720p CFG step
    assert one.exposed_comm_s == 0 and one.comm_gb == 0


@pytest.mark.parametrize("text", ["cfg=2", "ulysses=2", "ring=2", "ulysses=4", "cfg=2,ulysses=2", "ulysses=4,ring=2"])
def test_a_layout_divides_compute_and_pays_for_its_exchange(text: str) -> None:
    layout = ParallelLayout.parse(text)
    one = predict(T2V_A14B, "480p", ParallelLayout(), GPUS["H100"])
    split = predict(T2V_A14B, "480p", layout, GPUS["H100"])
    assert split.compute_s == pytest.approx(one.compute_s / layout.world)
    assert one.step_s / split.step_s <= layout.world  # never better than linear
    if layout.sequence > 1:
        assert split.comm_gb > 0.1  # activations of every block cross the links
    else:
        assert split.comm_gb < 0.01  # one latent-sized tensor a step
    if layout.ring == 1 and layout.sequence > 1:
        assert split.exposed_comm_s > 0  # Ulysses' all-to-alls wait


def test_the_ring_hides_its_sends_behind_attention_at_720p() -> None:
    ring = predict(T2V_A14B, "720p", ParallelLayout(ring=4), GPUS["H100"])
    ulysses = predict(T2V_A14B, "720p", ParallelLayout(ulysses=4), GPUS["H100"])
    assert ring.comm_gb > ulysses.comm_gb and ring.exposed_comm_s < ulysses.exposed_comm_s


@pytest.mark.parametrize("name", list(MODELS))
def test_the_weights_per_rank_are_the_models(name: str) -> None:
    model = MODELS[name]
    built = sum(p.numel() for p in build_meta_transformer(model.transformer).parameters())
    assert transformer_params(model.transformer) == pytest.approx(built, rel=1e-4)
    assert predict(model, "480p", ParallelLayout(cfg=2), GPUS["H100"]).weights_gb == pytest.approx(
        built * model.experts * 2 / 1e9, rel=1e-4)


def test_the_table_covers_both_models_resolutions_and_gpus() -> None:
    rows = table()
    assert {(r.model, r.resolution, r.gpu) for r in rows} == {
        (m, res, gpu) for m in MODELS for res in ("480p", "720p") for gpu in ("H100", "H200")}
    assert all(r.model != "ti2v-5b" or 24 % ParallelLayout.parse(r.layout).ulysses == 0 for r in rows)


def test_plan_prints_and_writes_the_predictions(tmp_path: Path) -> None:
    out = tmp_path / "parallel.json"
    result = CliRunner().invoke(app, ["plan", "--parallel-layouts", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "cfg=2,ulysses=4" in result.output and "H200" in result.output
    written = json.loads(out.read_text())
    assert len(written) == len(table()) and {"step_s", "video_s", "comm_gb"} <= set(written[0])
