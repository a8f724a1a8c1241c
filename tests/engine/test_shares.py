import pytest
from support import FakeClock

from reelserve.engine.shares import BOOST_CAP, ReservedShares


def test_a_waiting_level_earns_its_share_of_each_batch_and_spends_a_batch_opened_for_it() -> None:
    shares = ReservedShares({1: 0.2}, clock=FakeClock(0.0))
    queued = {0: 5, 1: 3}
    assert shares.owed_level(queued) is None  # nothing ran yet: priority decides
    shares.record({0: 10.0}, queued)
    assert shares.credit[1] == 2.0 and shares.owed_level(queued) == 1
    shares.record({1: 2.5, 0: 7.5}, queued, owed=1)  # realtime rows joined; the whole batch is charged
    assert shares.credit[1] == 2.0 + 2.0 - 10.0 and shares.owed_level(queued) is None
    for _ in range(3):  # 3 more level-0 batches repay 6 s of the debt...
        shares.record({0: 10.0}, queued)
    assert shares.owed_level(queued) is None
    shares.record({0: 10.0}, queued)  # ...the 4th puts it ahead again: 1 batch in 5 = its 20 %
    assert shares.owed_level(queued) == 1


def test_over_a_long_flood_a_level_gets_its_reserved_share() -> None:
    shares = ReservedShares({1: 0.1, 2: 0.05}, clock=FakeClock(0.0))
    queued = {0: 50, 1: 50, 2: 50}
    ran = {0: 0, 1: 0, 2: 0}
    for _ in range(2000):
        owed = shares.owed_level(queued)
        level = 0 if owed is None else owed
        ran[level] += 1
        shares.record({level: 1.0}, queued, owed=owed)
    assert abs(ran[1] / 2000 - 0.1) < 0.01 and abs(ran[2] / 2000 - 0.05) < 0.01


def test_service_before_a_flood_does_not_delay_the_share_in_it() -> None:
    shares = ReservedShares({1: 0.1}, clock=FakeClock(0.0))
    for _ in range(50):  # level 1 alone for a while: served at its own priority, no credit or debt
        shares.record({1: 1.0}, {1: 3})
    assert shares.credit[1] == 0.0
    flood = {0: 40, 1: 3}
    shares.record({0: 1.0}, flood)  # the first flood batch already earns level 1 its turn
    assert shares.owed_level(flood) == 1


def test_an_empty_queue_keeps_neither_credit_nor_debt() -> None:
    shares = ReservedShares({1: 0.5}, clock=FakeClock(0.0))
    shares.record({0: 4.0}, {1: 1})
    assert shares.credit[1] == 2.0
    shares.record({0: 4.0}, {0: 2})
    assert shares.credit[1] == 0.0
    shares.record({1: 4.0}, {1: 1, 0: 1}, owed=None)  # opened at its own priority: not charged
    assert shares.credit[1] == 0.0


def test_share_above_is_what_more_urgent_levels_got_in_the_window() -> None:
    clock = FakeClock(0.0)
    shares = ReservedShares({1: 0.1}, window_s=60, clock=clock)
    assert shares.share_above(1) == 0.0
    shares.record({0: 9.0, 1: 1.0}, {})
    assert shares.share_above(1) == 0.9 and shares.share_above(0) == 0.0 and shares.share_above(2) == 1.0
    clock.now = 61
    shares.record({1: 1.0}, {})
    assert shares.share_above(1) == 0.0


def test_deadlines_at_risk_raise_a_share_up_to_the_cap_and_it_falls_back_after() -> None:
    shares = ReservedShares({1: 0.1}, clock=FakeClock(0.0))
    shares.set_pressure({1: 0.05})  # its jobs need less than it has
    assert shares.current[1] == 0.1
    shares.set_pressure({1: 0.25})
    assert shares.current[1] == pytest.approx(0.3)  # the need, with a margin
    queued = {0: 9, 1: 9}
    shares.record({0: 1.0}, queued)
    assert shares.credit[1] == pytest.approx(0.3)  # earned at the raised share
    shares.set_pressure({1: 7.0})  # hopeless: more than the whole pipeline
    assert shares.current[1] == BOOST_CAP
    shares.set_pressure({})
    assert shares.current[1] == 0.1
