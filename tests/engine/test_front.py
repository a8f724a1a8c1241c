"""VideoFront against real parts: what a wait and a listing hand out, and when it is durable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_parts import engine, parts, request, wait_final  # noqa: F401 - fixtures, by name

from reelserve.engine.engine import Engine
from reelserve.schemas import Job, JobStatus


async def test_a_sync_wait_takes_the_final_job_from_its_event_without_reading_it(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    job = await engine.submit(request("a lighthouse waited for"))
    reads, read = [], engine.get

    async def noting_get(job_id: str) -> Job:
        reads.append(job_id)
        return await read(job_id)

    monkeypatch.setattr(engine, "get", noting_get)
    done = await engine.wait(job.id, timeout=60, submitted=job)
    assert done.status is JobStatus.completed and reads == []
    assert done == await read(job.id)  # just as stored


async def test_an_awaited_job_is_made_durable_before_a_wait_hands_it_out_unfinished(
        engine: Engine, parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Spies on the real store: what a power cut would lose is not testable, the order of calls is.
    store, calls = parts["store"], []
    create, make_durable = store.create, store.make_durable

    def noting_create(job: Job, durable: bool = True) -> None:
        calls.append(("create", durable))
        create(job, durable)

    def noting_make_durable() -> None:
        calls.append(("make_durable", None))
        make_durable()

    monkeypatch.setattr(store, "create", noting_create)
    monkeypatch.setattr(store, "make_durable", noting_make_durable)
    parts["pipeline"].hold()
    polled = await engine.submit(request("a lighthouse polled for"))
    job = await engine.submit(request("a lighthouse waited for, past its wait"), awaited=True)
    assert calls == [("create", True), ("create", False)]
    assert await asyncio.to_thread(parts["pipeline"].entered.wait, 30)  # the run is held at its gate
    listed = await engine.list(10, None)  # a listing hands out the ids too
    assert job.id in {j.id for j in listed} and calls[-1] == ("make_durable", None)
    handed = await engine.wait(job.id, timeout=0.2, submitted=job)  # the wait runs out
    assert not handed.status.final and calls[-1] == ("make_durable", None)
    parts["pipeline"].gate.set()
    for waited in (job, polled):
        assert (await wait_final(engine, waited.id)).status is JobStatus.completed
    await engine.list(10, None)
    assert calls.count(("make_durable", None)) == 2  # a final state is durable without it
