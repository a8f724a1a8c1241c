"""The batching policy's queue, shared by the embedded broker, the Redis broker's worker and the
planning simulator."""

import inspect
from dataclasses import dataclass

import pytest

from reelserve.jobs import local_broker, redis_broker
from reelserve.jobs.waiting import WaitingJobs
from reelserve.schemas.requests import ShapeKey
from reelserve.planning import simulate


@dataclass(frozen=True)
class Job:
    batch_key: str
    level: int


def waiting(*jobs: tuple[str, str, int]) -> WaitingJobs[Job]:
    buffer: WaitingJobs[Job] = WaitingJobs()
    for job_id, key, level in jobs:
        buffer.append(job_id, Job(key, level))
    return buffer


def take_all(buffer: WaitingJobs[Job], batch_key: str | None = None, level: int | None = None) -> list[str]:
    taken = []
    while (job_id := buffer.first(batch_key, level)) is not None:
        buffer.pop(job_id)
        taken.append(job_id)
    return taken


def test_oldest_of_the_most_urgent_level_first_across_batch_keys() -> None:
    buffer = waiting(("s1", "a", 1), ("r1", "b", 0), ("s2", "b", 1), ("r2", "a", 0), ("b1", "a", 2))
    assert take_all(buffer) == ["r1", "r2", "s1", "s2", "b1"]
    assert len(buffer) == 0 and buffer.depth_by_level() == {}


def test_a_batch_key_and_an_owed_level_select_what_joins() -> None:
    buffer = waiting(("r1", "a", 0), ("s1", "b", 1), ("s2", "a", 1), ("r2", "a", 0), ("b1", "a", 2))
    assert buffer.first("a", level=1) == "s2"  # the owed level first
    assert buffer.first("b", level=0) == "s1"  # none of that key at the owed level: the most urgent next
    assert buffer.first("a", level=2, only=True) == "b1"
    assert buffer.first("b", level=0, only=True) is None
    assert buffer.first("c") is None
    assert take_all(buffer, "a", level=2) == ["b1", "r1", "r2", "s2"]
    assert list(buffer.items()) == [("s1", Job("b", 1))]


def test_pushed_back_jobs_go_ahead_of_everything_in_their_order() -> None:
    buffer = waiting(("r1", "a", 0), ("r2", "b", 0))
    buffer.push_front([("x", Job("b", 0)), ("y", Job("a", 0)), ("z", Job("a", 1))])
    assert [job_id for job_id, _ in buffer.items()] == ["x", "y", "r1", "r2", "z"]
    assert buffer.position("x") == 0 and buffer.position("r2") == 3 and buffer.position("z") == 4
    buffer.push_front([("w", Job("a", 0))])
    assert take_all(buffer, "a") == ["w", "y", "r1", "z"]
    assert buffer.position("gone") is None


def test_appending_a_waiting_id_moves_it_to_the_back() -> None:
    buffer = waiting(("a", "k", 0), ("b", "k", 0))
    buffer.append("a", Job("k", 0))
    assert take_all(buffer) == ["b", "a"]


def test_urgent_is_more_urgent_work_that_cannot_join() -> None:
    buffer = waiting(("s1", "slow", 1), ("b1", "fast", 2))
    assert not buffer.urgent(1, "slow")  # nothing more urgent than level 1
    assert buffer.urgent(2, "fast")  # s1 (level 1) could not join a "fast" batch
    assert not buffer.urgent(2, "slow")  # s1 could join
    assert buffer.remove("s1") and not buffer.remove("s1")
    assert not buffer.urgent(2, "fast")


def test_depth_and_removal_keep_every_index_in_step() -> None:
    buffer = waiting(("a", "k", 0), ("b", "j", 0), ("c", "k", 3))
    assert buffer.depth_by_level() == {0: 2, 3: 1} and buffer.depth(0) == 2 and buffer.depth(1) == 0
    assert buffer.pop("c") == Job("k", 3)
    with pytest.raises(KeyError):
        buffer.pop("c")
    assert "c" not in buffer and "a" in buffer and buffer.get("b") == Job("j", 0)
    assert buffer.depth_by_level() == {0: 2}


@pytest.mark.parametrize("module", [local_broker, redis_broker, simulate])
def test_the_brokers_and_the_simulator_queue_in_it(module: object) -> None:
    # The policy lives once: each owner imports the buffer and keeps no scanning code of its own.
    source = inspect.getsource(module)  # type: ignore[arg-type]
    assert "WaitingJobs()" in source
    assert "def _first(" not in source and "def _urgent(" not in source and "def _pop_oldest(" not in source


def test_a_shape_key_matches_every_batch_key_of_its_shape_only() -> None:
    shape = ShapeKey("model='m'|width=32")
    buffer = waiting(("a", "model='m'|width=32|steps=4", 1), ("b", "model='m'|width=320|steps=4", 0),
                     ("c", "model='m'|width=32|steps=9", 0), ("d", "model='m'|width=32", 2))
    assert buffer.first(shape) == "c"  # the most urgent of the shape; b's width only starts with 32
    assert buffer.urgent(1, shape)  # b waits at level 0 and cannot join
    buffer.pop("b")
    assert not buffer.urgent(1, shape)  # c is of the shape: it would join, not preempt
    assert take_all(buffer, shape) == ["c", "a", "d"]
