"""JoinQueue: what the loop may offer a running batch, and that a batch's end and an offer never
cross (an offer either joins or is refused)."""

from __future__ import annotations

from reelserve.engine.joining import JoinQueue
from reelserve.schemas import GenerationParams

PARAMS = GenerationParams(model="tiny", prompt="a fox", width=32, height=32, num_frames=5, fps=8,
                          num_inference_steps=2, guidance_scale=5.0, seed=1)


def rows(*names: str) -> list[tuple[str, GenerationParams]]:
    return [(name, PARAMS) for name in names]


def test_offers_never_take_the_batch_past_its_limit() -> None:
    joins = JoinQueue(limit=3, live=1)
    assert joins.room() == 2
    assert not joins.offer(rows("a", "b", "c"))  # 1 + 3 > 3: nothing queued
    assert joins.offer(rows("a"))
    assert joins.room() == 1
    assert not joins.offer(rows("b", "c"))
    assert joins.take(live=1) == rows("a")
    assert joins.room() == 1 and joins.joined == 1
    assert joins.take(live=0) == []  # the two rows left between boundaries: room again
    assert joins.room() == 0 and joins.closed  # none running, none waiting: the batch is over


def test_the_last_boundary_closes_the_queue_so_a_late_offer_is_refused() -> None:
    joins = JoinQueue(limit=4, live=2)
    assert joins.take(live=1) == [] and not joins.closed  # a row is still running
    assert joins.take(live=0) == [] and joins.closed
    assert not joins.offer(rows("late"))
    assert joins.close() == []


def test_rows_waiting_when_a_batch_fails_come_back_from_close() -> None:
    joins = JoinQueue(limit=4, live=1)
    assert joins.offer(rows("a", "b"))
    assert joins.close() == rows("a", "b")
    assert joins.closed and joins.room() == 0 and not joins.offer(rows("c"))


def test_a_batch_making_way_takes_no_joiner_and_hands_the_waiting_ones_back() -> None:
    joins = JoinQueue(limit=4, live=1)
    assert joins.offer(rows("a"))
    joins.park_all()
    assert joins.parking and joins.closed and not joins.offer(rows("b"))
    assert joins.take(live=0) == []  # the rows were parked: nothing joins
    assert joins.close() == rows("a")  # never started: to run another time


def test_a_swap_parks_one_running_row_at_the_next_boundary_and_its_replacement_joins() -> None:
    joins = JoinQueue(limit=2, live=2)
    assert joins.room() == 0
    assert joins.swap("least-urgent", ("urgent", PARAMS))
    assert joins.room() == 0 and not joins.offer(rows("another"))  # the slot is taken, not freed
    assert not joins.swap("least-urgent", ("urgent-2", PARAMS))  # that row is leaving already
    assert joins.take_leaving() == ["least-urgent"] and joins.take_leaving() == []
    assert [key for key, _ in joins.take(live=1)] == ["urgent"]
    assert joins.room() == 0


def test_no_swap_while_offered_rows_wait_or_once_the_batch_ended() -> None:
    joins = JoinQueue(limit=3, live=2)
    assert joins.offer(rows("joiner"))
    assert not joins.swap("running", ("urgent", PARAMS))  # the row to leave might be the one about to join
    joins.take(live=2)
    joins.park_all()
    assert not joins.swap("running", ("urgent", PARAMS))
