"""Pipeline lanes: copies of the pipeline that run batches at once, each on its own thread with its
own share of the CPU threads.

Why: a small model does not keep several cores busy inside one call. Torch splits each op across
its threads and joins them at every op's end, so with two threads per op a batch of four micro
clips takes 1.6 s instead of 2.4 s on one: 1.5x from 2x the cores. Two lanes of one thread each,
each running a batch of its own, make 3.2 videos/s against 2.5 (docs/benchmarks.md, "The hot
path"); the lanes take their batches as they come free, so they run out of step, and a request
waits for the next free lane, not for the end of every lane's batch. A lane of one
thread also has no partner to wait for, so a core taken by something else (the MP4 encoder, the
HTTP server, another process) slows that lane only, instead of stalling every op of the call.

The lanes' pipelines share their weights (``registry.weight_sharing_copy``); each lane has its own
accelerations (they keep per-pipeline state) and its own thread, on which all of its torch work
runs (see ``Worker.on_model_thread`` for why). Lane 0 is the worker's pipeline thread, which
loaded the model.

A row's video does not depend on its lane: the lanes run the same weights through the same loop,
and a batch's rows are independent (the batching-parity tests). Thread counts change float
rounding only.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from contextlib import AbstractContextManager
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from reelserve.engine.cost_model import CallTiming
from reelserve.engine.joining import JoinQueue
from reelserve.engine.outcome import BatchOutcome
from reelserve.engine.runner import FinishedRow, PipelineRunner, Row, StepListener, StopCheck
from reelserve.models.options import machine_jiffies

class PipelineLanes:
    """The lanes of a worker: one runner per weight-sharing pipeline copy, and a thread for each lane
    past the first (lane 0 runs on the caller's thread: the worker's pipeline thread). The first
    ``lanes`` are in use, with ``threads`` torch threads each (None: leave the thread's count).

    ``BatchLoop`` runs a batch on each free lane (``run_lane`` on ``thread(lane)``); ``run`` splits
    one batch across the lanes in use, which is how warm-up tuning measures a plan.

    ``boost``: the threads a batch alone on an idle worker may take, all the lanes' (it then holds
    every lane). Only when the lanes have one thread each, so that libgomp never manages more
    threads than the cores: past them it throttles every team's spinning (one team per OS thread
    that runs torch ops; a lane of one thread has none).
    """

    def __init__(self, runners: Sequence[PipelineRunner], lanes: int | None = None, threads: int | None = None) -> None:
        if not runners:
            raise ValueError("at least one runner")
        self.runners = list(runners)
        self.lanes, self.threads = 1, threads
        self.use(len(self.runners) if lanes is None else lanes, threads)
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"reelserve-lane-{i}") for i in range(1, len(self.runners))]
        self._progress = threading.Lock()  # step listeners see one step at a time, as from one thread
        # Several models on one device: holds this model's weights on it for a batch, yielding the seconds
        # it took to bring them in (``DeviceMemory.use``). None: the model never leaves the device.
        self.residency: Callable[[], AbstractContextManager[float]] | None = None
        # ... and whether another model waits for the room this one holds: its batches then take no joiners.
        self.contended: Callable[[], bool] = lambda: False

    @property
    def on_cpu(self) -> bool:
        return all(runner.device.type == "cpu" for runner in self.runners)

    @property
    def boost(self) -> int | None:
        return self.lanes if self.lanes > 1 and self.threads == 1 else None

    def use(self, lanes: int, threads: int | None) -> None:
        """Run on the first ``lanes`` lanes with ``threads`` torch threads each from now on."""
        if not 1 <= lanes <= len(self.runners):
            raise ValueError(f"lanes must be between 1 and {len(self.runners)}")
        self.lanes, self.threads = lanes, threads

    def thread(self, lane: int) -> ThreadPoolExecutor:
        """Where lane ``lane`` (1 or more) runs."""
        return self._threads[lane - 1]

    def shutdown(self) -> None:
        for executor in self._threads:
            executor.shutdown(wait=True, cancel_futures=True)

    def run_lane(self, lane: int, rows: Sequence[Row], on_step: StepListener | None = None,
                 should_stop: StopCheck | None = None, threads: int | None = None,
                 joins: JoinQueue | None = None, on_finished: FinishedRow | None = None,
                 resume: Callable[[str], Any] | None = None,
                 checkpoint: Callable[[list[Any]], None] | None = None,
                 on_preview: Callable[[str, int, int, bytes], None] | None = None,
                 on_parked: Callable[[str, Any], None] | None = None) -> BatchOutcome:
        """``rows`` (and joiners, see ``PipelineRunner.run``) through lane ``lane``'s runner, on the
        calling thread (which must be the lane's), with ``threads`` torch threads (None: the lanes' count)."""
        count = threads or self.threads
        if count is not None and torch.get_num_threads() != count:
            torch.set_num_threads(count)  # per OS thread: this lane's own
        return self.runners[lane].run(rows, on_step, should_stop, joins, on_finished, resume, checkpoint, on_preview,
                                      on_parked)

    def joins_rows(self, lane: int) -> bool:
        return self.runners[lane].joins_rows

    def run(self, batch: Sequence[Row], on_step: StepListener | None = None,
            should_stop: StopCheck | None = None) -> BatchOutcome:
        """``batch`` split across the lanes in use, all at once; call it on lane 0's thread."""
        parts = split(list(batch), self.lanes)
        listener = None if on_step is None else self._serialised(on_step)
        futures: list[Future[BatchOutcome]] = [
            self.thread(i).submit(self.run_lane, i, part, listener, should_stop)
            for i, part in enumerate(parts[1:], start=1)
        ]
        outcomes = [self.run_lane(0, parts[0], listener, should_stop)]
        outcomes += [future.result() for future in futures]  # a lane's exception fails the batch, as in one runner
        return merge(outcomes)

    def _serialised(self, on_step: StepListener) -> StepListener:
        def listener(ids: list[str], step: int, total: int) -> None:
            with self._progress:
                on_step(ids, step, total)

        return listener


BUSY_ELSEWHERE = 0.5  # cores busy in other processes from which a lone batch is not boosted
LOAD_SAMPLE_S = 0.5  # how often the batch loop samples the machine's load while it may boost
# A boost decision samples anew when the last sample is this old: the periodic one may still cover
# work that ended up to LOAD_SAMPLE_S before the batch came (seen: a lone tiny request unboosted,
# 0.16 s instead of 0.11, after a client process's own work had ended 0.6 s before).
FRESH_SAMPLE_S = 0.1


class MachineLoad:
    """How many cores other processes kept busy over the last ``sample`` interval: the machine's busy
    time (/proc/stat) less this process's own (/proc/self/stat). 0 where /proc is missing.

    The boost needs it: two threads on a machine whose other core is busy elsewhere wait for a
    descheduled partner at every op; a lone micro request then took 2.8 s instead of 0.9 on one
    thread (docs/benchmarks.md, "A busy machine")."""

    def __init__(
        self, read: Callable[[str], str] = lambda path: Path(path).read_text(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._cores = os.cpu_count() or 1
        self._last = self._now()
        self._sampled_at = clock()
        self.busy_elsewhere = 0.0

    def _now(self) -> tuple[int, int, int] | None:
        """(all jiffies, busy jiffies, this process's jiffies), summed over the machine's cores."""
        try:
            total, busy = machine_jiffies(lambda: self._read("/proc/stat"))
            ours = self._read("/proc/self/stat").rsplit(")", 1)[1].split()
            return total, busy, int(ours[11]) + int(ours[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def sample(self) -> float:
        """Update and return ``busy_elsewhere`` (cores) over the time since the last sample."""
        now, last = self._now(), self._last
        self._last, self._sampled_at = now, self._clock()
        if now is not None and last is not None and now[0] > last[0]:
            others = (now[1] - last[1]) - (now[2] - last[2])
            self.busy_elsewhere = max(0.0, self._cores * others / (now[0] - last[0]))
        return self.busy_elsewhere

    def recent(self) -> float:
        """``busy_elsewhere`` as of now: sampled anew, over the time since the last sample, when that
        is ``FRESH_SAMPLE_S`` or more; else the last sample's (it ended less than that ago)."""
        if self._clock() - self._sampled_at >= FRESH_SAMPLE_S:
            return self.sample()
        return self.busy_elsewhere


class LaneBoost:
    """A batch alone on an idle worker runs on lane 0 with every lane's threads (``PipelineLanes.boost``)
    until another batch wants a lane; then, at its next step boundary, it drops to its lane's own
    threads, on its own thread (torch keeps the count per OS thread), and the others may start. So
    a lone request is as fast as on one lane of all threads, and load still gets every lane."""

    def __init__(self, lanes: PipelineLanes, load: MachineLoad | None = None) -> None:
        self.lanes = lanes
        self.load = load or MachineLoad()
        self.active = False
        self._drop = threading.Event()
        self._dropped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> int | None:
        """The boosted batch's thread count, or None (no boost) while other processes keep half a core
        or more busy; call on the event loop as the batch starts."""
        if self.lanes.boost is None or self.load.recent() >= BUSY_ELSEWHERE:
            return None
        self.active = True
        self._drop.clear()
        self._dropped, self._loop = asyncio.Event(), asyncio.get_running_loop()
        return self.lanes.boost

    def at_step(self) -> None:
        """Called by the boosted batch between steps, on its lane's thread."""
        if self.active and self._drop.is_set() and self._loop is not None and self._dropped is not None:
            if self.lanes.threads is not None:
                torch.set_num_threads(self.lanes.threads)
            self.active = False
            self._loop.call_soon_threadsafe(self._dropped.set)

    def end(self) -> None:
        self.active = False

    async def watch_load(self) -> None:
        """Sample the machine's load every ``LOAD_SAMPLE_S`` while boosting is possible (until cancelled)."""
        while self.lanes.boost is not None:
            self.load.sample()
            await asyncio.sleep(LOAD_SAMPLE_S)

    @property
    def dropping(self) -> bool:
        """A boosted batch has been asked to give its extra threads back, and has not yet."""
        return self.active and self._drop.is_set()

    async def release(self, boosted: asyncio.Task[None] | None) -> None:
        """Have the boosted batch drop its extra threads; returns once it has, or has ended."""
        if not self.active or self._dropped is None:
            return
        self._drop.set()
        dropped = asyncio.ensure_future(self._dropped.wait())
        await asyncio.wait({dropped} | ({boosted} if boosted is not None else set()),
                           return_when=asyncio.FIRST_COMPLETED)
        dropped.cancel()


def split(rows: list[Row], lanes: int) -> list[list[Row]]:
    """``rows`` in at most ``lanes`` contiguous parts whose sizes differ by at most one."""
    parts = min(lanes, len(rows))
    size, extra = divmod(len(rows), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(rows[start:end])
        start = end
    return out

def merge(outcomes: list[BatchOutcome]) -> BatchOutcome:
    """One outcome for the batch. The parts ran at once, so the batch took as long as its slowest
    part, and one call of all the rows is what the cost model sees (it predicts batches, not parts)."""
    merged = BatchOutcome()
    for outcome in outcomes:
        merged.frames.update(outcome.frames)
        merged.stopped_at.update(outcome.stopped_at)
        merged.errors.update(outcome.errors)
    merged.inference_s = max(outcome.inference_s for outcome in outcomes)
    fits = [outcome.fit_batch_size for outcome in outcomes if outcome.fit_batch_size is not None]
    if fits:
        merged.fit_batch_size = min(fits) * len(outcomes)  # every part at most that size
    calls = [outcome.calls for outcome in outcomes]
    if len(outcomes) > 1 and all(len(part) == 1 for part in calls):
        merged.calls = [_together([part[0] for part in calls])]
    else:  # a part split after running out of memory: its calls, as they were
        merged.calls = [call for part in calls for call in part]
    return merged

def _together(calls: list[CallTiming]) -> CallTiming:
    steps = [call.step_s for call in calls]
    return CallTiming(
        batch_size=sum(call.batch_size for call in calls),
        steps=max(call.steps for call in calls),
        step_s=None if None in steps else max(s for s in steps if s is not None),
        overhead_s=max(call.overhead_s for call in calls),
        total_s=max(call.total_s for call in calls),
    )
