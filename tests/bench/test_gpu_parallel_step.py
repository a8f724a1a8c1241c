"""``bench/gpu/parallel_step.py`` runs end to end on CPU processes (gloo) at toy size and reports a
timing per layout, through the serving group's own code."""

from __future__ import annotations

import json
from pathlib import Path

from bench.gpu.parallel_step import main


def test_the_toy_run_times_each_layout(tmp_path: Path) -> None:
    out = tmp_path / "parallel.json"
    results = main(["--toy", "--model", "ti2v-5b", "--layouts", "none;ring=2", "--steps", "2", "--warmup", "1",
                    "--out", str(out)])
    assert [(r.layout, r.ranks) for r in results] == [("none", 1), ("ring=2", 2)]
    assert all(r.ms_per_step and r.ms_per_step > 0 for r in results)
    assert json.loads(out.read_text())["results"][1]["layout"] == "ring=2"
