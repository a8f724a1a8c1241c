from support import FakeClock

from reelserve.engine.shares import ReservedShares


def test_a_level_below_its_share_with_work_queued_is_owed() -> None:
    clock = FakeClock(0.0)
    shares = ReservedShares({1: 0.2, 2: 0.1}, window_s=60, clock=clock)
    assert shares.owed_level({0: 5, 2: 1}) is None  # nothing served yet: priority decides
    shares.record({0: 9.0})
    assert shares.owed_level({0: 5, 2: 1}) == 2  # level 1 has no work queued: not owed
    assert shares.owed_level({0: 5, 1: 1, 2: 1}) == 1  # the larger deficit first
    shares.record({1: 3.0})  # 3 of 12 s = 25 % >= 20 %
    assert shares.owed_level({0: 5, 1: 1}) is None


def test_old_service_leaves_the_window() -> None:
    clock = FakeClock(0.0)
    shares = ReservedShares({2: 0.1}, window_s=60, clock=clock)
    shares.record({2: 5.0})
    clock.now = 30
    shares.record({0: 10.0})
    assert shares.owed_level({2: 1}) is None  # 5 of 15 s
    clock.now = 61  # the level-2 batch is out of the window
    assert shares.owed_level({2: 1}) == 2


def test_share_above_is_what_more_urgent_levels_got() -> None:
    shares = ReservedShares({1: 0.1}, window_s=60, clock=FakeClock(0.0))
    assert shares.share_above(1) == 0.0
    shares.record({0: 9.0, 1: 1.0})
    assert shares.share_above(1) == 0.9 and shares.share_above(0) == 0.0 and shares.share_above(2) == 1.0
