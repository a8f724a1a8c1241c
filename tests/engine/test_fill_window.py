"""The fill window, when ``--max-wait-ms`` leaves it to the scheduler: a share of what the last batch
of the same shape took, within bounds."""

from __future__ import annotations

import pytest

from reelserve.engine.scheduler import FIRST_FILL_WINDOW_S, Scheduler, SchedulingOptions
from reelserve.jobs.local_broker import LocalBroker
from reelserve.metrics import Metrics
from reelserve.models import get_spec
from reelserve.schemas import Job, VideoCreateRequest, resolve_request

LIMITS = get_spec("tiny").limits


def test_the_fill_window_is_a_share_of_the_shapes_last_batch() -> None:
    scheduler = Scheduler(LocalBroker(), LIMITS, Metrics(), SchedulingOptions(), max_batch_size=4, max_wait_s=None)
    params = resolve_request(VideoCreateRequest(prompt="a lighthouse"), "tiny", LIMITS)
    other = resolve_request(VideoCreateRequest(prompt="a lighthouse", num_inference_steps=3), "tiny", LIMITS)
    key = params.batch_key()
    assert scheduler.fill_window(key) == FIRST_FILL_WINDOW_S  # nothing ran at this shape yet
    for seconds, window in ((0.11, 0.0055), (0.02, 0.002), (100.0, 2.0), (2.6, 0.13)):
        scheduler.batch_done([Job(params=params)], [], seconds, failed=False, fit=None)
        assert scheduler.fill_window(key) == pytest.approx(window)
    scheduler.batch_done([Job(params=params)], [], 40.0, failed=True, fit=None)  # a failed batch's time says nothing
    assert scheduler.fill_window(key) == pytest.approx(0.13)
    assert scheduler.fill_window(other.batch_key()) == FIRST_FILL_WINDOW_S  # per shape


def test_a_fixed_max_wait_is_the_window_of_every_batch() -> None:
    scheduler = Scheduler(LocalBroker(), LIMITS, Metrics(), SchedulingOptions(), max_batch_size=4, max_wait_s=0.25)
    assert scheduler.batcher.max_wait_s == 0.25
