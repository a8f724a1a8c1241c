"""The one batching policy's queue: waiting jobs by priority level, each level oldest first, that
can hand out the oldest job of a batch key, and say whether more urgent work waits that a batch
could not take. The embedded broker keeps its whole queue in one; the Redis broker's worker keeps
what it read ahead in one; the planning simulator queues its simulated jobs in one. So the three
take jobs, fill batches and preempt by the same code.

Pure data: no locks, no waiting, no I/O (its owners add those).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from reelserve.schemas.requests import ShapeKey


class Queued(Protocol):
    """What the buffer needs to know of a waiting job."""

    @property
    def batch_key(self) -> str: ...

    @property
    def level(self) -> int: ...


Q = TypeVar("Q", bound=Queued)


def matches(wanted: str, batch_key: str) -> bool:
    """Whether a job of ``batch_key`` is what ``wanted`` (a batch key or a ``ShapeKey``) asks for."""
    return wanted.matches(batch_key) if isinstance(wanted, ShapeKey) else wanted == batch_key


class WaitingJobs(Generic[Q]):
    """Waiting items under unique ids (a job id, or a queue entry's id), one FIFO per level (0 is the
    most urgent), indexed by batch key so that taking the oldest job of a key costs no scan."""

    def __init__(self) -> None:
        # level -> batch key -> id -> (arrival order, item), oldest first
        self._levels: dict[int, dict[str, OrderedDict[str, tuple[int, Q]]]] = {}
        self._where: dict[str, tuple[int, str]] = {}  # id -> (level, batch key)
        self._back = itertools.count()
        self._front = itertools.count(-1, -1)  # pushed to the front: older than everything there

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._where

    def append(self, item_id: str, item: Q) -> None:
        """At the end of its level (an id already waiting moves there)."""
        self.remove(item_id)
        self._queue(item)[item_id] = (next(self._back), item)
        self._where[item_id] = (item.level, item.batch_key)

    def push_front(self, items: Iterable[tuple[str, Q]]) -> None:
        """Back at the front of their levels, ahead of everything waiting there, the first first."""
        for item_id, item in reversed(list(items)):
            self.remove(item_id)
            queue = self._queue(item)
            queue[item_id] = (next(self._front), item)
            queue.move_to_end(item_id, last=False)
            self._where[item_id] = (item.level, item.batch_key)

    def first(self, batch_key: str | None = None, level: int | None = None, *, only: bool = False,
              up_to: int | None = None) -> str | None:
        """The id of the oldest item of the most urgent level (of ``level`` first, when given), of
        ``batch_key`` if given; with ``only``, of ``level`` alone; with ``up_to``, of that level or a
        more urgent one. None if there is none."""
        order = [level] if only else self._order(level)
        if up_to is not None:
            order = [lvl for lvl in order if lvl is not None and lvl <= up_to]
        for lvl in order:
            keys = self._levels.get(lvl, {})
            if batch_key is not None and not isinstance(batch_key, ShapeKey):
                if batch_key in keys:  # a key's queue is never empty: the last pop deletes it
                    return next(iter(keys[batch_key]))
                continue
            fronts = [  # each key's oldest (of the shape asked for)
                next(iter(queue.items())) for key, queue in keys.items() if batch_key is None or matches(batch_key, key)
            ]
            if fronts:
                return min(fronts, key=lambda front: front[1][0])[0]
        return None

    def urgent(self, below: int, batch_key: str | None) -> bool:
        """Does an item of a level more urgent than ``below`` wait that could not join ``batch_key``?"""
        return any(
            batch_key is None or not matches(batch_key, key)
            for lvl, keys in self._levels.items() if lvl < below for key in keys
        )

    def get(self, item_id: str) -> Q:
        level, key = self._where[item_id]
        return self._levels[level][key][item_id][1]

    def pop(self, item_id: str) -> Q:
        """Remove and return a waiting item (``KeyError`` if it is not waiting)."""
        level, key = self._where.pop(item_id)
        keys = self._levels[level]
        _, item = keys[key].pop(item_id)
        if not keys[key]:
            del keys[key]
            if not keys:
                del self._levels[level]
        return item

    def remove(self, item_id: str) -> bool:
        """Remove an item if it waits; False if it did not."""
        if item_id not in self._where:
            return False
        self.pop(item_id)
        return True

    def position(self, item_id: str) -> int | None:
        """How many items are ahead of ``item_id`` (0 = next), or None if it does not wait."""
        if item_id not in self._where:
            return None
        level, key = self._where[item_id]
        arrival = self._levels[level][key][item_id][0]
        ahead = sum(self.depth(lvl) for lvl in self._levels if lvl < level)
        return ahead + sum(order < arrival for queue in self._levels[level].values() for order, _ in queue.values())

    def depth(self, level: int) -> int:
        return sum(len(queue) for queue in self._levels.get(level, {}).values())

    def depth_by_level(self) -> dict[int, int]:
        """Waiting items per level, levels with none left out."""
        return {level: self.depth(level) for level in sorted(self._levels)}

    def items(self, level: int | None = None) -> Iterator[tuple[str, Q]]:
        """``(id, item)`` of every waiting item (of ``level`` only, when given), each level oldest first."""
        for lvl in sorted(self._levels) if level is None else [level]:
            entries = [(order, item_id, item) for queue in self._levels.get(lvl, {}).values()
                       for item_id, (order, item) in queue.items()]
            for _, item_id, item in sorted(entries, key=lambda entry: entry[0]):
                yield item_id, item

    def _order(self, level: int | None) -> list[int]:
        order = sorted(self._levels)
        if level is None:
            return order
        return [level, *(lvl for lvl in order if lvl != level)]

    def _queue(self, item: Q) -> OrderedDict[str, tuple[int, Q]]:
        keys = self._levels.setdefault(item.level, {})
        return keys.setdefault(item.batch_key, OrderedDict())
