"""A row parked in one process resumes in another to the video an uninterrupted run makes (within
1e-5): what a drained worker's rows and a killed worker's checkpoints rely on. The first process is a
real child Python with its own freshly built model; only the parked bytes cross."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from reelserve.engine.denoise_loop import denoise
from reelserve.engine.parked_rows import resume_row
from reelserve.engine.runner import PipelineRunner
from reelserve.schemas import GenerationParams

PARAMS = GenerationParams(model="tiny", prompt="a red fox in snow", width=32, height=32, num_frames=5, fps=8,
                          num_inference_steps=8, guidance_scale=5.0, seed=11)
PARKED_AT = 3
VERSION = "tiny:code:test|{}"

CHILD = f"""
import sys
import torch
from reelserve.engine.parked_rows import park_bytes
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.schemas import GenerationParams

model = load_model("tiny", LoadOptions(device="cpu"))
family = PipelineRunner(model.pipeline, model.device, model.max_sequence_length).family
params = GenerationParams.model_validate_json(sys.argv[1])
with torch.inference_mode():
    rows = family.prepare_rows([("row", params)])
    for _ in range({PARKED_AT}):
        family.scheduler_step(rows, family.denoise_step(rows))
open(sys.argv[2], "wb").write(park_bytes(rows[0], {VERSION!r}))
"""


def test_a_row_parked_in_another_process_resumes_to_the_uninterrupted_video(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    parked = tmp_path / "row.pt"
    subprocess.run([sys.executable, "-c", CHILD, PARAMS.model_dump_json(), str(parked)], check=True, timeout=300)

    runner = PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    row = resume_row(parked.read_bytes(), VERSION)
    assert row.step == PARKED_AT and row.params == PARAMS
    with torch.inference_mode():
        frames, stopped = denoise(runner.family, [row], mixed_steps=True)
    assert stopped == {}
    uninterrupted = runner.run([("row", PARAMS)]).frames["row"]
    assert np.abs(frames["row"] - uninterrupted).max() <= 1e-5
