"""A model-running process does all its torch work on one thread: loading, warm-up, thread tuning and
every batch. Torch ops on a second thread make a second OpenMP team, and libgomp then throttles its
threads' spinning: a batch of four micro clips took twice as long (docs/benchmarks.md, "The hot path")."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support import serve

import reelserve.models
from reelserve.models import registry


def test_loading_warm_up_tuning_and_batches_share_the_pipeline_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[str]] = {"load": set(), "generate": set(), "run": set()}
    load, generate = registry.load_model, registry.LoadedModel.generate

    def noting_load(*args: Any) -> Any:
        threads["load"].add(threading.current_thread().name)
        return load(*args)

    def noting_generate(self: Any, *args: Any, **kwargs: Any) -> Any:  # warm-up and thread tuning
        threads["generate"].add(threading.current_thread().name)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(reelserve.models, "load_model", noting_load)
    monkeypatch.setattr(registry.LoadedModel, "generate", noting_generate)
    with serve(tmp_path) as running:  # warm-up 1, --cpu-threads unset: the tuning runs too
        runner = running.server.worker_engine.runner
        run = runner.run

        def noting_run(*args: Any, **kwargs: Any) -> Any:
            threads["run"].add(threading.current_thread().name)
            return run(*args, **kwargs)

        runner.run = noting_run  # type: ignore[method-assign]
        video = running.client.post("/v1/videos/sync", json={"prompt": "a kite", "size": "32x32", "num_frames": 5})
        assert video.json()["status"] == "completed"
    names = set().union(*threads.values())
    assert len(names) == 1 and next(iter(names)).startswith("reelserve-pipeline"), threads
    assert all(threads.values())  # each kind of work was seen
