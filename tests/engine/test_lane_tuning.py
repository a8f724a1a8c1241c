"""How the pipeline uses the CPU (lanes x threads), chosen by timing the served model, and applied on
the threads that run."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
import torch

from reelserve.engine.cost_model import CallTiming
from reelserve.engine.lane_tuning import LanePlan, candidates, choose_plan, plans, tune_lanes
from reelserve.engine.lanes import PipelineLanes
from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.schemas import GenerationParams


@pytest.mark.parametrize(("cores", "expected"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_candidates_double_up_to_the_cores(cores: int, expected: list[int]) -> None:
    assert candidates(cores) == expected


def test_plans_are_one_lane_of_each_thread_count_and_the_cores_shared_out_evenly() -> None:
    assert plans(2, max_lanes=2) == [LanePlan(1, 1), LanePlan(1, 2), LanePlan(2, 1)]
    assert plans(8, max_lanes=8) == [
        LanePlan(1, 1), LanePlan(1, 2), LanePlan(1, 4), LanePlan(1, 8), LanePlan(2, 4), LanePlan(4, 2), LanePlan(8, 1)
    ]
    assert plans(8, max_lanes=2)[-1] == LanePlan(2, 4)  # no more lanes than were loaded
    assert plans(2, max_lanes=1) == [LanePlan(1, 1), LanePlan(1, 2)]


def fake_measure(step_s: dict[LanePlan, float], overhead_s: dict[LanePlan, float], calls: list[LanePlan]) -> Any:
    """A full batch (4 rows per lane) whose parts cost what the plan says."""

    def measure(plan: LanePlan) -> CallTiming:
        calls.append(plan)
        return CallTiming(batch_size=4 * plan.lanes, steps=2, step_s=step_s[plan], overhead_s=overhead_s[plan],
                          total_s=overhead_s[plan] + 2 * step_s[plan])

    return measure


ONE, TWO, LANES = LanePlan(1, 1), LanePlan(1, 2), LanePlan(2, 1)


def test_the_most_videos_per_second_at_the_default_steps_win() -> None:
    calls: list[LanePlan] = []
    # One thread wins a short call (less per call) but loses at 25 steps; two lanes of one thread
    # take longer per call than one lane of two, and still make the most videos per second.
    measure = fake_measure({ONE: 0.08, TWO: 0.05, LANES: 0.08}, {ONE: 0.4, TWO: 0.6, LANES: 0.5}, calls)
    choice = choose_plan(measure, [ONE, TWO, LANES], steps=25)
    assert choice.plan == LANES
    assert choice.rates == pytest.approx({ONE: 4 / 2.4, TWO: 4 / 1.85, LANES: 8 / 2.5})
    assert sorted(calls) == [ONE, ONE, TWO, TWO, LANES, LANES]  # every plan, twice
    assert "2 lanes x 1 thread" in choice.describe()


def test_more_lanes_then_fewer_threads_win_a_near_tie() -> None:
    nearly = fake_measure({ONE: 0.1, TWO: 0.05, LANES: 0.108}, {ONE: 0.0, TWO: 0.0, LANES: 0.0}, [])
    assert choose_plan(nearly, [ONE, TWO, LANES], steps=25).plan == LANES  # one lane of two only 8 % ahead
    clearly = fake_measure({ONE: 0.1, TWO: 0.05, LANES: 0.112}, {ONE: 0.0, TWO: 0.0, LANES: 0.0}, [])
    assert choose_plan(clearly, [ONE, TWO, LANES], steps=25).plan == TWO  # 12 % ahead
    threads = fake_measure({ONE: 0.051, TWO: 0.05, LANES: 0.2}, {ONE: 0.0, TWO: 0.0, LANES: 0.0}, [])
    assert choose_plan(threads, [ONE, TWO, LANES], steps=25).plan == ONE  # one lane either way: fewer threads


def on_a_thread(call: Any) -> Any:
    """Lane 0 is the caller's thread: a thread of its own, so the test's thread keeps its count."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join()
    return result[0]


def tiny_lanes(lanes: int) -> tuple[Any, PipelineLanes]:
    model = load_model("tiny", LoadOptions(device="cpu"), lanes=lanes)
    runners = [PipelineRunner(lane.pipeline, lane.device, lane.max_sequence_length, accelerated=lane.accelerated)
               for lane in model.lanes]
    return model, PipelineLanes(runners)


def test_tuning_a_real_model_measures_every_plan_and_leaves_the_lanes_using_the_choice() -> None:
    model, lanes = tiny_lanes(2)
    try:
        choice = on_a_thread(lambda: tune_lanes(model, lanes, per_lane_batch=2, cores=2))
    finally:
        lanes.shutdown()
    assert set(choice.rates) == {ONE, TWO, LANES} and all(rate > 0 for rate in choice.rates.values())
    assert (lanes.lanes, lanes.threads) == (choice.plan.lanes, choice.plan.threads)


def test_each_lane_runs_on_its_own_thread_with_its_own_thread_count() -> None:
    model, lanes = tiny_lanes(2)
    lanes.use(2, 1)
    row = GenerationParams(model="tiny", prompt="a kite", width=32, height=32, num_frames=5, fps=8,
                           num_inference_steps=2, guidance_scale=1.0, seed=1)
    seen: dict[int, tuple[str, int]] = {}

    def remember(lane: int) -> Any:
        def on_step(ids: list[str], step: int, total: int) -> None:
            seen[lane] = (threading.current_thread().name, torch.get_num_threads())
        return on_step

    def run() -> None:
        torch.set_num_threads(2)  # what a thread started before the choice would hold
        lanes.run_lane(0, [("j0", row)], remember(0))
        lanes.thread(1).submit(lanes.run_lane, 1, [("j1", row)], remember(1)).result()

    try:
        on_a_thread(run)
    finally:
        lanes.shutdown()
    assert seen[0][1] == 1 and seen[1][1] == 1
    assert seen[0][0] != seen[1][0] and seen[1][0].startswith("reelserve-lane-1")


def test_lane_copies_share_the_weights_and_give_the_same_video() -> None:
    model, lanes = tiny_lanes(2)
    first, second = (lane.pipeline.transformer for lane in model.lanes)
    assert first is not second
    assert all(a is b for a, b in zip(first.parameters(), second.parameters(), strict=True))
    row = GenerationParams(model="tiny", prompt="a kite", width=32, height=32, num_frames=5, fps=8,
                           num_inference_steps=3, guidance_scale=5.0, seed=7)
    lanes.use(2, 1)
    try:
        videos = on_a_thread(lambda: [lanes.run_lane(0, [("a", row)]).frames["a"],
                                      lanes.thread(1).submit(lanes.run_lane, 1, [("b", row)]).result().frames["b"]])
    finally:
        lanes.shutdown()
    assert (videos[0] == videos[1]).all()  # the same weights, loop and thread count: the same bits


def proc_files(*samples: tuple[int, int, int]) -> Any:
    """/proc/stat and /proc/self/stat at successive samples: (idle, busy, ours) jiffies."""
    stats = iter(samples)
    current: dict[str, tuple[int, int, int]] = {}

    def read(path: str) -> str:
        if path == "/proc/stat":
            current["now"] = next(stats)
            idle, busy, _ = current["now"]
            return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3"
        ours = current["now"][2]
        return f"42 (python -m my) R 1 1 1 0 -1 4194304 10 0 0 0 {ours} 0 0 0 20 0 9 0"

    return read


def test_machine_load_counts_other_processes_busy_cores_not_its_own() -> None:
    from reelserve.engine.lanes import MachineLoad

    cores = os.cpu_count() or 1
    # Between the samples: 100 jiffies per core pass; 150 of them busy, 50 of those this process's.
    load = MachineLoad(proc_files((1000, 500, 40), (1000 + 100 * cores - 150, 650, 90)))
    assert load.sample() == pytest.approx(1.0)  # one core's worth, elsewhere
    broken = MachineLoad(lambda path: "")
    assert broken.sample() == 0.0  # no /proc: no load seen, nothing refused for it


def test_a_boost_decision_samples_the_load_anew_unless_the_last_sample_is_fresh() -> None:
    from reelserve.engine.lanes import FRESH_SAMPLE_S, MachineLoad

    cores = os.cpu_count() or 1
    now = [0.0]
    # Three readings: at start; 0.5 s later (a core busy elsewhere); later still (nothing busy).
    busy = (1000 + 100 * cores - 150, 650, 90)
    idle = (busy[0] + 100 * cores, busy[1], busy[2])
    load = MachineLoad(proc_files((1000, 500, 40), busy, idle), clock=lambda: now[0])
    now[0] = 0.5
    assert load.sample() == pytest.approx(1.0)  # the periodic sample: a core busy elsewhere
    now[0] += FRESH_SAMPLE_S / 2
    assert load.recent() == pytest.approx(1.0)  # the last sample ended just now: it stands
    now[0] += FRESH_SAMPLE_S
    assert load.recent() == 0.0  # sampled anew: the other process's work has ended


def test_a_lone_batch_is_not_boosted_while_another_process_keeps_a_core_busy() -> None:
    from reelserve.engine.lanes import LaneBoost, MachineLoad

    _, lanes = tiny_lanes(2)
    lanes.use(2, 1)
    try:
        boost = LaneBoost(lanes, MachineLoad(lambda path: "", clock=lambda: 0.0))  # the sample stays fresh
        boost.load.busy_elsewhere = 0.9
        assert boost.begin() is None and not boost.active
        boost.load.busy_elsewhere = 0.1
        assert asyncio.run(begin_on_a_loop(boost)) == 2 and boost.active
    finally:
        lanes.shutdown()


async def begin_on_a_loop(boost: Any) -> int | None:
    return boost.begin()
