"""The engine with a result cache (in-process tier only) against real parts: SQLite store, local broker and
storage, the tiny pipeline, and an embedding model that fails to load."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reelserve.cache import CachePolicy, MemoryTier, ResultCache, SemanticCache
from reelserve.cache.embedder import MiniLMEmbedder
from reelserve.engine.engine import Engine
from reelserve.engine.storage_keys import video_key
from reelserve.engine.runner import PipelineRunner
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.sqlite_store import SqliteJobStore
from reelserve.metrics import Metrics
from reelserve.models import get_spec
from reelserve.schemas import Job, JobStatus, VideoCreateRequest
from reelserve.storage.local import LocalStorage


@pytest.fixture
async def engine(tmp_path: Path, tiny_model: Any) -> AsyncIterator[Engine]:
    metrics = Metrics()
    cache = ResultCache(MemoryTier(), metrics=metrics)
    # A model directory that does not exist: every embedding fails, as a broken install would.
    semantic = SemanticCache(cache, MiniLMEmbedder(model_dir=tmp_path / "no-such-model"))
    engine = Engine(
        model_name="tiny", limits=get_spec("tiny").limits, store=SqliteJobStore(tmp_path / "jobs.sqlite3"),
        broker=LocalBroker(), storage=LocalStorage(tmp_path / "files"), metrics=metrics, max_batch_size=2,
        cache=cache, semantic=semantic, cache_policy=CachePolicy(model_version="tiny:test", semantic_default=True),
    )
    await engine.start(PipelineRunner(tiny_model.pipeline, tiny_model.device, tiny_model.max_sequence_length))
    yield engine
    await engine.stop()


def request(prompt: str = "a windmill at dawn", **extra: Any) -> VideoCreateRequest:
    return VideoCreateRequest(prompt=prompt, size="32x32", num_frames=5, num_inference_steps=2, seed=3, **extra)


async def completed(engine: Engine, job: Job) -> Job:
    done = await engine.wait(job.id, timeout=60)
    assert done.status is JobStatus.completed, done
    return done


async def test_a_failing_embedder_costs_the_semantic_match_only(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first = await completed(engine, await engine.submit(request()))
    assert not first.cached and first.cache_key is not None and first.cache_semantic
    entry = engine.video_cache.cache.memory.get(first.cache_key)  # type: ignore[union-attr]
    assert entry is not None and entry.job_id == first.id and entry.video_key == first.video_key
    assert entry.model_seconds == pytest.approx(first.timings.inference_s / first.batch_size)  # type: ignore[operator]
    assert entry.size == engine.storage.size(first.video_key)  # type: ignore[arg-type]

    hit = await engine.submit(request("A windmill at dawn!"))
    assert hit.status is JobStatus.completed and hit.cached and hit.cache_source_id == first.id
    assert hit.cache_similarity is None and engine.store.get(hit.id) == hit
    assert engine.storage.get(hit.video_key) == engine.storage.get(first.video_key)  # type: ignore[arg-type]

    assert "embedding failed" in caplog.text and "windmill" not in caplog.text.lower()
    assert len(engine.video_cache.semantic) == 0  # type: ignore[arg-type]


async def test_deleting_a_copy_keeps_the_entry_and_deleting_the_source_drops_it(engine: Engine) -> None:
    source = await completed(engine, await engine.submit(request(cache={"semantic": False})))
    copy = await engine.submit(request(cache={"semantic": False}))
    assert copy.cached
    await engine.delete(copy.id)
    assert not engine.storage.exists(copy.video_key)  # type: ignore[arg-type]
    assert (await engine.submit(request(cache={"semantic": False}))).cache_source_id == source.id

    await engine.delete(source.id)
    assert len(engine.video_cache.cache.memory) == 0  # type: ignore[union-attr]
    rerun = await engine.submit(request(cache={"semantic": False}))
    assert rerun.status is JobStatus.queued and not rerun.cached
    await completed(engine, rerun)


async def test_the_completed_record_is_saved_only_once_the_cache_holds_its_result(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A client polling the record may submit the same request the moment it reads "completed": the
    # entry must be there already, whichever thread saves the record.
    cached_at_save, save = [], engine.store.save

    def noting_save(job: Job, expect: Any = None) -> bool:
        if job.status is JobStatus.completed and not job.cached:
            cached_at_save.append(engine.video_cache.cache.memory.get(job.cache_key) is not None)  # type: ignore[union-attr, arg-type]
        return save(job, expect)

    monkeypatch.setattr(engine.store, "save", noting_save)
    first = await completed(engine, await engine.submit(request("a harbour at noon", cache={"semantic": False})))
    assert cached_at_save == [True]
    assert (await engine.submit(request("a harbour at noon", cache={"semantic": False}))).cache_source_id == first.id


async def test_a_run_whose_job_was_cancelled_meanwhile_leaves_no_cache_entry(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    save = engine.store.save

    def cancelled_first(job: Job, expect: Any = None) -> bool:
        if job.status is JobStatus.completed:
            stored = engine.store.get(job.id)
            assert stored is not None
            save(stored.model_copy(update={"status": JobStatus.cancelled}))  # the owner's cancel got there first
        return save(job, expect)

    monkeypatch.setattr(engine.store, "save", cancelled_first)
    job = await engine.submit(request("a lighthouse nobody waits for", cache={"semantic": False}))
    assert (await engine.wait(job.id, timeout=60)).status is JobStatus.cancelled
    await engine.finisher.wait()
    assert len(engine.video_cache.cache.memory) == 0  # type: ignore[union-attr]
    assert not engine.storage.exists(video_key(job.id, 1))  # this run's files went
    monkeypatch.undo()
    again = await engine.submit(request("a lighthouse nobody waits for", cache={"semantic": False}))
    assert again.status is JobStatus.queued and not again.cached
    await completed(engine, again)
