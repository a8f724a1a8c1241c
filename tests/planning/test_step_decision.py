"""The step-level decision (join, stop growing, make way) is one piece of code: the engine's feeder
and the planner's simulation both ask it, and the brokers' ``take`` answers it as ``answer`` does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from reelserve.engine import join_feeder, step_decision
from reelserve.engine.cost_model import CostModel
from reelserve.engine.joining import JoinQueue
from reelserve.engine.step_decision import (
    NO_SHAPE, Move, QueueLook, StepDecision, StepPolicy, answer, decide_step, next_look,
)
from reelserve.jobs.base import Preempted
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.waiting import WaitingJobs
from reelserve.planning import simulate
from reelserve.planning.simulate import Arrival
from reelserve.planning.workload import RequestShape, Workload
from reelserve.schemas.requests import ShapeKey

SHAPE = ShapeKey("model='m'|width=64")
MINE_4, MINE_9 = "model='m'|width=64|steps=4", "model='m'|width=64|steps=9"  # the batch's shape
OTHER = "model='m'|width=128|steps=4"


@dataclass(frozen=True)
class Queued:
    batch_key: str
    level: int


def queue(*jobs: tuple[str, str, int]) -> WaitingJobs[Queued]:
    waiting: WaitingJobs[Queued] = WaitingJobs()
    for job_id, key, level in jobs:
        waiting.append(job_id, Queued(key, level))
    return waiting


def decide(waiting: WaitingJobs[Queued], *, level: int = 1, room: int = 1, growing: bool = True,
           policy: StepPolicy = StepPolicy(), cheap: bool = True) -> StepDecision:
    return decide_step(waiting, policy, shape=SHAPE, level=level, room=room, growing=growing, cheap=cheap)


def test_next_look_follows_the_batch_state() -> None:
    policy = StepPolicy()
    assert next_look(policy, shape=SHAPE, level=1, room=2, growing=True) == QueueLook(SHAPE, 2, Move.STOP_GROWING)
    assert next_look(policy, shape=SHAPE, level=1, room=0, growing=True, cheap=False) == \
        QueueLook(NO_SHAPE, 1, Move.MAKE_WAY)
    # Full where a row more is cheap: a job more urgent than its least urgent row takes that row's slot.
    assert next_look(policy, shape=SHAPE, level=1, room=0, growing=True, least_level=2) == \
        QueueLook(SHAPE, 1, Move.MAKE_WAY, up_to=1, swap=True)
    assert next_look(policy, shape=SHAPE, level=1, room=2, growing=False) == QueueLook(NO_SHAPE, 1, Move.MAKE_WAY)
    not_preempting = StepPolicy(preempt=False)
    assert next_look(not_preempting, shape=SHAPE, level=1, room=0, growing=True) is Move.WAIT  # until a row leaves
    assert next_look(not_preempting, shape=SHAPE, level=1, room=2, growing=False) is Move.DONE


def test_a_waiting_job_of_the_shape_joins_oldest_of_the_most_urgent_level_first() -> None:
    waiting = queue(("old", MINE_4, 2), ("less-urgent-other", OTHER, 2), ("newer", MINE_9, 1))
    assert decide(waiting) == StepDecision(Move.JOIN, "newer")
    waiting.pop("newer")
    assert decide(waiting) == StepDecision(Move.JOIN, "old")


def test_a_job_at_least_as_urgent_of_another_shape_goes_before_a_joiner() -> None:
    # The batch would keep it from the lane: growth stops even though a joiner waits (the broker's
    # take with urgent_first answers so too).
    waiting = queue(("mine", MINE_4, 1), ("urgent-other", OTHER, 0))
    assert decide(waiting, level=1) == StepDecision(Move.STOP_GROWING)


def test_a_batch_takes_at_most_its_limit_of_joiners_in_all() -> None:
    assert step_decision.room_to_grow(room=2, joined=0, limit=4) == 2
    assert step_decision.room_to_grow(room=2, joined=3, limit=4) == 1
    assert step_decision.room_to_grow(room=3, joined=4, limit=4) == 0  # it ends, and the next batch opens


def test_growth_stops_for_a_job_at_least_as_urgent_with_another_shape() -> None:
    assert decide(queue(("a", OTHER, 1)), level=1) == StepDecision(Move.STOP_GROWING)
    assert decide(queue(("a", OTHER, 2)), level=1) == StepDecision(Move.WAIT)  # less urgent: the batch grows on
    assert decide(queue()) == StepDecision(Move.WAIT)


def test_a_full_batch_swaps_its_least_urgent_row_for_a_more_urgent_job_of_its_shape() -> None:
    waiting = queue(("standard", MINE_9, 1))
    full = {"shape": SHAPE, "level": 1, "room": 0, "growing": True, "least_level": 2}
    assert decide_step(waiting, StepPolicy(), **full) == StepDecision(Move.SWAP, "standard")
    assert decide_step(waiting, StepPolicy(), **{**full, "least_level": 1}) == StepDecision(Move.WAIT)  # not more urgent
    assert decide_step(waiting, StepPolicy(), **full, cheap=False) == StepDecision(Move.WAIT)  # dear: no swap
    waiting.append("realtime-other", Queued(OTHER, 0))
    assert decide_step(waiting, StepPolicy(), **full) == StepDecision(Move.MAKE_WAY)  # another shape: the lane


def test_a_batch_makes_way_only_for_strictly_more_urgent_work_it_cannot_take() -> None:
    assert decide(queue(("a", OTHER, 0)), level=1, growing=False) == StepDecision(Move.MAKE_WAY)
    assert decide(queue(("a", OTHER, 1)), level=1, growing=False) == StepDecision(Move.WAIT)
    # Full where a row more is dear, it cannot take even a job of its own shape: a more urgent one
    # makes it park (where a row more is cheap, that job takes its least urgent row's slot: above).
    assert decide(queue(("a", MINE_9, 0)), level=1, room=0, cheap=False) == StepDecision(Move.MAKE_WAY)
    assert decide(queue(("a", MINE_9, 0)), level=1, room=0) == StepDecision(Move.SWAP, "a")
    assert decide(queue(("a", OTHER, 0)), level=1, room=0, policy=StepPolicy(preempt=False)) == StepDecision(Move.WAIT)


STATES = [
    [],
    [("a", MINE_4, 1)],
    [("a", OTHER, 0)],
    [("a", OTHER, 1)],
    [("a", OTHER, 2), ("b", MINE_9, 2)],
    [("a", OTHER, 0), ("b", MINE_4, 2), ("c", MINE_9, 1)],
    [("a", MINE_9, 0)],
]
LOOKS = [QueueLook(SHAPE, 2, Move.STOP_GROWING), QueueLook(NO_SHAPE, 1, Move.MAKE_WAY),
         QueueLook(SHAPE, 1, Move.STOP_GROWING), QueueLook(NO_SHAPE, 2, Move.MAKE_WAY),
         QueueLook(SHAPE, 2, Move.STOP_GROWING, up_to=1), QueueLook(SHAPE, 1, Move.MAKE_WAY, up_to=1, swap=True)]


@pytest.mark.parametrize("jobs", STATES)
async def test_answer_is_what_the_embedded_brokers_take_answers(jobs: list[tuple[str, str, int]]) -> None:
    for look in LOOKS:
        broker = LocalBroker()
        for job_id, key, level in jobs:
            await broker.put(job_id, key, level)
        try:
            taken = await broker.take(look.wanted, timeout=0, preempt_below=look.preempt_below,
                                      urgent_first=look.joins, up_to=look.up_to)
            joined = Move.SWAP if look.swap else Move.JOIN
            expected = StepDecision(Move.WAIT) if taken is None else StepDecision(joined, taken[0])
        except Preempted:
            expected = StepDecision(look.on_urgent)
        assert answer(queue(*jobs), look) == expected, (jobs, look)


def test_the_feeder_and_the_simulation_import_the_one_decision() -> None:
    assert join_feeder.next_look is step_decision.next_look
    assert join_feeder.room_to_grow is simulate.room_to_grow is step_decision.room_to_grow
    assert simulate.decide_step is step_decision.decide_step
    assert join_feeder.StepPolicy is step_decision.StepPolicy and join_feeder.NO_SHAPE is step_decision.NO_SHAPE


async def test_the_feeder_and_the_simulation_both_decide_through_next_look(monkeypatch: pytest.MonkeyPatch) -> None:
    callers: list[str] = []

    def spying(caller: str) -> Any:
        def look(*args: Any, **kwargs: Any) -> Any:
            callers.append(caller)
            return next_look(*args, **kwargs)
        return look

    monkeypatch.setattr(join_feeder, "next_look", spying("feeder"))
    monkeypatch.setattr(step_decision, "next_look", spying("simulation"))  # decide_step's

    # The feeder of a full batch at level 1 parks it for a waiting level-0 job of another shape.
    broker = LocalBroker()
    await broker.put("urgent", OTHER, 0)
    joins = JoinQueue(limit=2, live=2)
    feeder = join_feeder.JoinFeeder(
        broker=broker, joins=joins, shape=SHAPE, level=1, claim=_never, hand_back=_never, joined=lambda job: None,
        lanes_busy=lambda: True, joined_rows=Counter("joined", "joined rows", registry=CollectorRegistry()),
        policy=StepPolicy(), level_of=lambda job: 0,
    )
    await asyncio.wait_for(feeder.run(), timeout=10)
    assert joins.parking
    assert await broker.take(timeout=0) == ("urgent", OTHER)  # watching took nothing: the lane runs it next

    # The simulation of a job that may join a running batch asks at its step boundaries.
    mix = [RequestShape(steps=10), RequestShape(steps=5)]
    workload = Workload.model_validate({"mix": [s.model_dump() for s in mix],
                                        "server": {"continuous_batching": True, "preemption": True}})
    simulate.simulate(workload, CostModel(), arrivals=[Arrival(0.0, 0, "standard", 0), Arrival(0.5, 1, "standard", 1)])
    assert set(callers) == {"feeder", "simulation"}


async def _never(*args: object) -> Any:
    raise AssertionError("the feeder claimed or handed back a job it should not have taken")


def test_where_a_row_more_is_dear_no_less_urgent_job_joins() -> None:
    # On a CPU one row more costs every row its share: a realtime batch must not take batch-tier rows.
    waiting = queue(("batch-tier", MINE_4, 2))
    assert decide_step(waiting, StepPolicy(), shape=SHAPE, level=1, room=2, growing=True, cheap=False) == \
        StepDecision(Move.WAIT)
    assert decide(waiting, level=1) == StepDecision(Move.JOIN, "batch-tier")  # a GPU's near-free row: it joins
    waiting.append("same-tier", Queued(MINE_9, 1))
    assert decide_step(waiting, StepPolicy(), shape=SHAPE, level=1, room=2, growing=True, cheap=False) == \
        StepDecision(Move.JOIN, "same-tier")
    assert step_decision.grows_cheaply(0.10, 0.12, 0.14)  # a GPU: a row more adds a fifth of a lone row
    assert not step_decision.grows_cheaply(0.10, 0.40, 0.50)  # a CPU: each row costs a lone row's time


def test_a_batch_opened_for_a_share_makes_way_only_once_its_time_is_spent() -> None:
    waiting = queue(("urgent", OTHER, 0))
    owed = decide_step(waiting, StepPolicy(join=False), shape=SHAPE, level=2, room=2, growing=False, owed=True)
    assert owed == StepDecision(Move.WAIT)  # not DONE: it looks again once the share is spent
    spent = decide_step(waiting, StepPolicy(join=False), shape=SHAPE, level=2, room=2, growing=False, owed=False)
    assert spent == StepDecision(Move.MAKE_WAY)


def test_a_share_is_owed_time_not_a_whole_batch() -> None:
    from reelserve.engine.shares import ReservedShares

    shares = ReservedShares({2: 0.05})
    shares.record({0: 1.0}, {2: 3})  # a realtime batch of 1 s ran while the batch tier waited
    assert shares.owed_level({2: 3}) == 2
    assert shares.owed_seconds(2) == pytest.approx(0.05 / 0.95)  # its credit, at 0.95 s of credit a second
