"""A model-running process does each lane's torch work on that lane's thread: loading, warm-up and lane
0's batches on the pipeline thread, lane i's on its own. Torch ops of one lane on a second thread make
a second OpenMP team, and libgomp then throttles its threads' spinning: a batch of four micro clips
took twice as long (docs/benchmarks.md, "The hot path")."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support import serve

import reelserve.models
from reelserve import model_host
from reelserve.engine.runner import PipelineRunner
from reelserve.models import registry


def test_loading_warm_up_tuning_and_batches_keep_to_their_lanes_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[str]] = {"load": set(), "generate": set()}
    runs: dict[int, set[str]] = {}  # runner -> the threads that ran it
    load, generate, run = registry.load_model, registry.LoadedModel.generate, PipelineRunner.run

    def noting_load(*args: Any) -> Any:
        threads["load"].add(threading.current_thread().name)
        return load(*args)

    def noting_generate(self: Any, *args: Any, **kwargs: Any) -> Any:  # warm-up
        threads["generate"].add(threading.current_thread().name)
        return generate(self, *args, **kwargs)

    def noting_run(self: Any, *args: Any, **kwargs: Any) -> Any:  # lane tuning and batches
        runs.setdefault(id(self), set()).add(threading.current_thread().name)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(reelserve.models, "load_model", noting_load)
    monkeypatch.setattr(registry.LoadedModel, "generate", noting_generate)
    monkeypatch.setattr(PipelineRunner, "run", noting_run)
    monkeypatch.setattr(model_host, "available_cores", lambda: 2)
    # Lanes and threads left to the warm-up: two lanes loaded, and the tuning runs the two-lane plan.
    with serve(tmp_path, pipeline_lanes=None, cpu_threads=None) as running:
        lanes = running.server.worker_engine.runner
        video = running.client.post("/v1/videos/sync", json={"prompt": "a kite", "size": "32x32", "num_frames": 5})
        assert video.json()["status"] == "completed"
    pipeline = threads["load"] | threads["generate"] | runs[id(lanes.runners[0])]
    assert len(pipeline) == 1 and next(iter(pipeline)).startswith("reelserve-pipeline"), (threads, runs)
    assert runs[id(lanes.runners[1])] == {"reelserve-lane-1_0"}, runs
