"""The engine on real parts for its tests: a SQLite store, local storage, the tiny pipeline behind a
gate (``GatedFamily``), and the requests and waits the tests share. Import the fixtures by name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import GatedFamily

from reelserve.engine.engine import Engine
from reelserve.engine.join_feeder import StepPolicy
from reelserve.engine.runner import BatchOutcome, PipelineRunner
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.metrics import Metrics
from reelserve.models import get_spec
from reelserve.schemas import Job, VideoCreateRequest
from reelserve.storage.local import LocalStorage


class RecordingRunner(PipelineRunner):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outcomes: list[BatchOutcome] = []  # each once its run has returned (``returned`` counts them)
        self.returned = threading.Semaphore(0)
        self.handed: dict[str, Any] = {}  # the frames of rows handed out as they finished, by job id

    def run(self, batch: Any, on_step: Any = None, should_stop: Any = None, joins: Any = None,
            on_finished: Any = None, resume: Any = None, checkpoint: Any = None,
            on_preview: Any = None, on_parked: Any = None) -> BatchOutcome:
        """Also keeps the frames of rows handed out as they finished, in ``handed`` (before the job
        completes) and in the outcome's ``frames``."""
        handed: dict[str, Any] = {}

        def finished(key: str, frames: Any) -> None:
            handed[key] = self.handed[key] = frames
            on_finished(key, frames)

        outcome = super().run(batch, on_step, should_stop, joins, None if on_finished is None else finished, resume,
                              checkpoint, on_preview, on_parked)
        outcome.frames.update(handed)
        self.outcomes.append(outcome)
        self.returned.release()
        return outcome

    async def outcome_of(self, job_id: str) -> BatchOutcome:
        """The outcome of the run that had ``job_id``, once that run has returned (a job completes as
        its row finishes, before its run returns)."""
        while True:
            for outcome in self.outcomes:
                if job_id in outcome.frames or job_id in outcome.stopped_at or job_id in outcome.errors:
                    return outcome
            assert await asyncio.to_thread(self.returned.acquire, True, 60), "no run returned"


@pytest.fixture
def parts(tmp_path: Path, tiny_model: Any) -> dict[str, Any]:
    runner = RecordingRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length)
    runner.family = gate = GatedFamily(runner.family)
    return {
        "store": SqliteJobStore(tmp_path / "jobs.sqlite3"),
        "storage": LocalStorage(tmp_path / "files"),
        "pipeline": gate,
        "runner": runner,
    }


@pytest.fixture
async def engine(parts: dict[str, Any]) -> AsyncIterator[Engine]:
    engine = make_engine(parts, max_batch_size=4)
    await engine.recover()
    await engine.start(parts["runner"])
    yield engine
    parts["pipeline"].gate.set()
    await engine.stop()


def make_engine(parts: dict[str, Any], max_batch_size: int, broker: LocalBroker | None = None,
                step_policy: StepPolicy | None = None) -> Engine:
    spec = get_spec("tiny")
    return Engine(
        model_name="tiny", limits=spec.limits, store=parts["store"], broker=broker or LocalBroker(),
        storage=parts["storage"], metrics=Metrics(), max_batch_size=max_batch_size, max_wait_s=0.05,
        step_policy=step_policy,
    )


def request(prompt: str, **extra: Any) -> VideoCreateRequest:
    fields: dict[str, Any] = {"size": "32x32", "num_frames": 5, "num_inference_steps": 3, **extra}
    return VideoCreateRequest(prompt=prompt, **fields)


async def wait_final(engine: Engine, job_id: str) -> Job:
    job = await engine.wait(job_id, timeout=60)
    assert job.status.final, f"{job_id} still {job.status}"
    return job
