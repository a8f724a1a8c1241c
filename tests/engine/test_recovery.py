"""A start's recovery of another model's unfinished job: left to its own engine when the server serves
that model too, failed (naming the model) when it no longer does, never run on the wrong weights."""

from __future__ import annotations

from typing import Any

from engine_parts import make_engine, parts, request, wait_final  # noqa: F401 - fixtures, by name

from reelserve.models import get_spec
from reelserve.schemas import Job, JobStatus, resolve_request


def jobs_for_both(store: Any) -> tuple[Job, Job]:
    """A queued job for micro and one for tiny (the engine's model), as a run serving both left them."""
    other = Job(params=resolve_request(request("made for micro", seed=1), "micro", get_spec("micro").limits))
    mine = Job(params=resolve_request(request("made for tiny", seed=2), "tiny", get_spec("tiny").limits))
    store.create(other)
    store.create(mine)
    return other, mine


async def test_a_job_for_a_model_no_longer_served_fails_instead_of_running_on_other_weights(
    parts: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    store = parts["store"]
    other, mine = jobs_for_both(store)
    engine = make_engine(parts, max_batch_size=4)  # serves tiny alone now
    assert await engine.recover() == 1
    await engine.start(parts["runner"])
    try:
        assert (await wait_final(engine, mine.id)).status is JobStatus.completed
        failed = await wait_final(engine, other.id)
    finally:
        await engine.stop()
    assert failed.status is JobStatus.failed and failed.error is not None
    assert failed.error.code == "unknown_model"
    assert "model 'micro' is no longer served here (this server serves 'tiny')" in failed.error.message
    assert store.transitions(other.id) == [(None, "queued"), ("queued", "failed")]  # it never ran


async def test_a_job_for_another_served_model_is_left_to_its_engine(
    parts: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    store = parts["store"]
    other, _ = jobs_for_both(store)
    engine = make_engine(parts, max_batch_size=4)
    engine.served_models = ("tiny", "micro")  # tiny's engine is the default; micro's has its own
    assert await engine.recover() == 1
    await engine.stop()
    assert store.get(other.id).status is JobStatus.queued  # type: ignore[union-attr]
    assert store.transitions(other.id) == [(None, "queued")]
