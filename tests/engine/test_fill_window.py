"""The fill window, when ``--max-wait-ms`` leaves it to the scheduler: a share of what the last batch
of the same shape took, within bounds, waited only when another request of the shape came lately."""

from __future__ import annotations

import asyncio

import pytest

from reelserve.engine.fill_window import FIRST_FILL_WINDOW_S, FillWindow
from reelserve.engine.scheduler import Scheduler, SchedulingOptions
from reelserve.jobs.local_broker import LocalBroker
from reelserve.metrics import Metrics
from reelserve.models import get_spec
from reelserve.schemas import Job, VideoCreateRequest, resolve_request

LIMITS = get_spec("tiny").limits
ALONE = 0.0  # what a batch opened by a request alone waits: nothing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_fill_window_is_a_share_of_the_shapes_last_batch() -> None:
    window = FillWindow(sees_arrivals=False)
    assert window("a") == FIRST_FILL_WINDOW_S  # nothing ran at this shape yet
    for seconds, expected in ((0.11, 0.0055), (0.02, 0.002), (100.0, 2.0), (2.6, 0.13)):
        window.batch_took("a", seconds)
        assert window("a") == pytest.approx(expected)
    assert window("b") == FIRST_FILL_WINDOW_S  # per shape


def test_a_request_alone_does_not_wait_and_one_with_a_recent_companion_the_share() -> None:
    clock = Clock()
    window = FillWindow(clock=clock)
    window.batch_took("a", 2.0)
    window.arrived("a")
    assert window("a") == ALONE  # the first request ever seen of its shape has no companion
    clock.now += 5.0
    window.arrived("a")
    assert window("a") == ALONE  # the last one came 5 s ago: longer than a batch takes
    clock.now += 1.5
    window.arrived("a")
    assert window("a") == pytest.approx(0.1)  # another came 1.5 s ago, within a batch's 2 s
    clock.now += 3.0
    assert window("a") == pytest.approx(0.1)  # a batch opened later for the queued one: the same two
    window.arrived("a")
    assert window("a") == ALONE  # 3 s after the one before it
    window.arrived("b")
    window.batch_took("b", 2.0)
    assert window("b") == ALONE  # arrivals count per shape: "a"'s do not make "b" busy


def test_the_scheduler_counts_arrivals_as_jobs_are_queued() -> None:
    scheduler = Scheduler(LocalBroker(), LIMITS, Metrics(), SchedulingOptions(), max_batch_size=4, max_wait_s=None)
    params = resolve_request(VideoCreateRequest(prompt="a lighthouse"), "tiny", LIMITS)
    key = params.batch_key()
    assert scheduler.batcher._window is scheduler.fill_window
    scheduler.batch_done([Job(params=params)], [], 100.0, failed=False, fit=None)
    scheduler.batch_done([Job(params=params)], [], 900.0, failed=True, fit=None)  # a failed batch's time says nothing

    async def queue_one() -> None:
        await scheduler.enqueue(Job(params=params))

    asyncio.run(queue_one())
    assert scheduler.fill_window(key) == ALONE
    asyncio.run(queue_one())  # within the last batch's 100 s
    assert scheduler.fill_window(key) == pytest.approx(2.0)  # 5 % of 100 s, at the 2 s ceiling


def test_a_worker_on_a_shared_queue_sees_no_arrivals_and_waits_the_share() -> None:
    options = SchedulingOptions(shared_queue=True)
    scheduler = Scheduler(LocalBroker(), LIMITS, Metrics(), options, max_batch_size=4, max_wait_s=None)
    params = resolve_request(VideoCreateRequest(prompt="a lighthouse"), "tiny", LIMITS)
    scheduler.batch_done([Job(params=params)], [], 2.6, failed=False, fit=None)
    assert scheduler.fill_window(params.batch_key()) == pytest.approx(0.13)


def test_a_fixed_max_wait_is_the_window_of_every_batch() -> None:
    scheduler = Scheduler(LocalBroker(), LIMITS, Metrics(), SchedulingOptions(), max_batch_size=4, max_wait_s=0.25)
    assert scheduler.batcher.max_wait_s == 0.25
    assert scheduler.batcher._window is None
