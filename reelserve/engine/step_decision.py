"""The step-level scheduling decision: what a running batch does about the waiting queue between two
steps (take a joiner, stop growing, make way for more urgent work, or wait). One decision, used by
the engine's ``JoinFeeder`` and by the planner's simulation (``reelserve plan``); pure, so the
planner imports it without asyncio or torch.

What is shared, and how:

- ``next_look`` is the policy: from the batch's state (its shape, its most urgent level, its room,
  ``StepPolicy``, whether it still grows) it says what to look for in the queue (a ``QueueLook``),
  or that there is nothing to look for (``Move.WAIT``, ``Move.DONE``). Both callers ask it.
- ``answer`` is how a queue answers a look, on the brokers' own ``WaitingJobs``: whether one of a
  level below ``preempt_below`` waits that could not join (``urgent``; a batch that grows asks this
  first, so a job it would keep from the lane goes before a joiner), else the oldest job of
  ``wanted`` if one waits (``first``). The engine does not call it: its queue sits behind a broker
  (the Redis broker's buffer must read ahead, and both wait on their own locks), so the feeder asks
  ``Broker.take(look.wanted, preempt_below=look.preempt_below, urgent_first=look.joins, up_to=look.up_to)``, which
  answers by those same two queries in that same order, raising ``Preempted`` for the urgent case. The simulation, owning its
  ``WaitingJobs``, calls ``answer`` (``decide_step`` = ``next_look`` then ``answer``); a test holds
  ``answer`` to the embedded broker's ``take``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from reelserve.jobs.waiting import WaitingJobs
from reelserve.schemas.requests import ShapeKey

# Matches no batch key: a look for it takes nothing and watches for a more urgent job of any shape.
NO_SHAPE = ShapeKey("\0")


@dataclass(frozen=True)
class StepPolicy:
    """What may change a running batch between two steps (the settings ``continuous_batching``,
    ``preemption`` and ``parked_rows_mb``)."""

    join: bool = True  # waiting jobs of its shape join it
    preempt: bool = True  # it makes way, parked, for a more urgent job of another shape
    parked_limit_bytes: int = 512 * 2**20  # parked rows kept in memory, at most
    # What a row parked to storage is tied to (the model version and the settings that change its
    # floats); None: a draining worker does not park its rows, it lets them finish.
    resume_version: str | None = None
    # Every this many steps a running row's state is written to storage (needs ``resume_version``),
    # so a worker killed mid-run leaves it for the next run to resume; 0: never.
    checkpoint_steps: int = 0


class Move(enum.Enum):
    """What a running batch does now."""

    JOIN = "join"  # the oldest waiting job of its shape joins it (``StepDecision.job_id``)
    STOP_GROWING = "stop_growing"  # one at least as urgent waits with another shape: take no more
    MAKE_WAY = "make_way"  # one more urgent than every row waits: park the batch, requeue its jobs
    SWAP = "swap"  # full: its least urgent row is parked and a more urgent job of its shape takes the slot
    WAIT = "wait"  # nothing now: look again when the queue or the batch changes
    DONE = "done"  # nothing can change this batch any more


@dataclass(frozen=True)
class QueueLook:
    """What to look for in the queue: the oldest job of ``wanted`` (a ``ShapeKey``; ``NO_SHAPE``
    takes none) joins; else a job of a level below ``preempt_below`` that could not join means
    ``on_urgent``."""

    wanted: ShapeKey
    preempt_below: int
    on_urgent: Move
    up_to: int | None = None  # joiners of this level or a more urgent one only (None: any level)
    swap: bool = False  # a joiner takes the slot of the batch's least urgent row (``Move.SWAP``)

    @property
    def joins(self) -> bool:
        return self.wanted is not NO_SHAPE


@dataclass(frozen=True)
class StepDecision:
    move: Move
    job_id: str | None = None  # the joiner, for ``Move.JOIN`` and ``Move.SWAP``


def room_to_grow(room: int, joined: int, limit: int) -> int:
    """How many rows a running batch may still take: its free room, and at most ``limit`` (its
    batch-size limit) joiners in all. Bounded, so that a batch under steady load ends: tiers are
    served and reserved shares credited as batches end and open, and one that grew for ever would
    starve a tier owed its share."""
    return max(0, min(room, limit - joined))


# A less urgent job joins a running batch, and a full batch swaps one row out for a more urgent job
# of its shape, only where one row more adds at most this share of a lone row's step time (the cost
# model's): a GPU batch of four costs little more than one, so a row more rides almost free; on a CPU
# every row costs about a lone row, and a realtime row must not run at the pace of batch-tier rows.
CHEAP_ROW = 0.25


def grows_cheaply(alone_s: float, step_s: float, grown_step_s: float) -> bool:
    """Whether one row more (a step of ``grown_step_s`` instead of ``step_s``) costs little next to a
    lone row's step (``alone_s``)."""
    return grown_step_s - step_s <= CHEAP_ROW * alone_s


def next_look(policy: StepPolicy, *, shape: ShapeKey, level: int, room: int, growing: bool,
              cheap: bool = True, owed: bool = False, least_level: int | None = None) -> QueueLook | Move:
    """What a running batch looks for now (every lane busy; with a lane free it takes nothing).

    :param level: the level of its most urgent row still running (0 is the most urgent): a row that
        finished no longer holds the batch's place.
    :param room: rows it may take now without passing its batch-size limit.
    :param growing: it still takes joiners (starts as ``policy.join``; ``STOP_GROWING`` ends it).
    :param cheap: one row more costs its rows little (``grows_cheaply``); if not, it takes no less
        urgent joiner.
    :param owed: it was opened for a reserved share whose time (``ReservedShares.owed_seconds``) is
        not spent yet: it makes way for nothing until then, and looks again later.
    :param least_level: the level of its least urgent row still running (None: ``level``). A full
        batch where a row more is cheap parks just that row for a more urgent job of its shape
        (``Move.SWAP``); where it is dear the whole batch makes way, so the urgent job runs alone."""
    if growing and room > 0:
        # A job at least as urgent with another shape ends the growth: a batch that keeps growing
        # would keep that job from the lane.
        return QueueLook(shape, level + 1, Move.STOP_GROWING, up_to=None if cheap else level)
    if policy.preempt and not owed and room == 0 and cheap:
        least = level if least_level is None else least_level
        return QueueLook(shape, level, Move.MAKE_WAY, up_to=least - 1, swap=True)
    if policy.preempt and not owed:  # full, or done growing: only strictly more urgent work of any shape
        return QueueLook(NO_SHAPE, level, Move.MAKE_WAY)
    return Move.WAIT if growing or (policy.preempt and owed) else Move.DONE  # full, or owed: later; or never


def answer(waiting: WaitingJobs[Any], look: QueueLook) -> StepDecision:
    """How ``waiting`` answers ``look`` now, as ``Broker.take(look.wanted, preempt_below=...)`` does
    (without waiting, and without taking the joiner: the caller pops it)."""
    urgent = waiting.urgent(look.preempt_below, look.wanted)
    if urgent and look.joins:  # growth stops before it takes another row ahead of that job
        return StepDecision(look.on_urgent)
    job_id = waiting.first(look.wanted, up_to=look.up_to)
    if job_id is not None:
        return StepDecision(Move.SWAP if look.swap else Move.JOIN, job_id)
    return StepDecision(look.on_urgent if urgent else Move.WAIT)


def decide_step(
    waiting: WaitingJobs[Any], policy: StepPolicy, *, shape: ShapeKey, level: int, room: int, growing: bool,
    cheap: bool = True, owed: bool = False, least_level: int | None = None,
) -> StepDecision:
    """``next_look``, answered by ``waiting``: the whole decision, for a caller that owns its queue."""
    look = next_look(policy, shape=shape, level=level, room=room, growing=growing, cheap=cheap, owed=owed,
                     least_level=least_level)
    return StepDecision(look) if isinstance(look, Move) else answer(waiting, look)
