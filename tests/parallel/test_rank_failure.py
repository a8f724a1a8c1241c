"""A rank that dies: the call that needed it raises ``RankFailure`` after the group was built again, the
next call runs on the new group and gives the same result; and on a server, a batch that loses a rank
mid-run has its jobs run again and every job completes once."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import pytest
import torch

from family_wrappers import StepRecorder
from parallel_builds import build
from reelserve.parallel.failure import RankFailure
from reelserve.parallel.family import ParallelWanFamily
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.ranks import ParallelRanks
from reelserve.schemas import GenerationParams
from support import serve, wait_until


def params(seed: int) -> GenerationParams:
    return GenerationParams(model="tiny", fps=8, prompt="a red circle", negative_prompt="", width=32, height=32,
                            num_frames=5, num_inference_steps=2, guidance_scale=5.0, seed=seed)


def kill(process_id: int, ranks: ParallelRanks) -> None:
    os.kill(process_id, signal.SIGKILL)
    wait_until(lambda: all(p.pid != process_id or not p.is_alive() for p, _ in ranks.followers), timeout=30)


@contextmanager
def tiny_group() -> Iterator[tuple[ParallelRanks, ParallelWanFamily, list]]:
    """tiny on ulysses=2 (rank 0 here), with one row prepared; closed after."""
    pipeline, _, _ = build("tiny", 0)
    ranks = ParallelRanks(GroupSpec(ParallelLayout.parse("ulysses=2"), functools.partial(build, "tiny"), threads=1),
                          pipeline, None)
    ranks.start()
    try:
        family = ParallelWanFamily(pipeline, 16, ranks)
        yield ranks, family, family.prepare_rows([("a", params(3))])
    finally:
        ranks.close()


def test_a_call_that_loses_a_rank_raises_and_the_group_is_built_again() -> None:
    with tiny_group() as (ranks, family, rows):
        with torch.inference_mode():
            before = family.denoise_step(rows)
            (lost,) = ranks.pids()
            kill(lost, ranks)
            with pytest.raises(RankFailure):
                family.denoise_step(rows)
            assert ranks.restarts == 1 and ranks.pids() and ranks.pids() != [lost]
            after = family.denoise_step(rows)  # the rows' state is rank 0's: unchanged by the loss
        assert torch.allclose(before, after, atol=1e-5)
    assert not any(p.is_alive() for p, _ in ranks.followers)


def test_a_batch_that_loses_a_rank_mid_run_completes_on_the_new_group(tmp_path: Path) -> None:
    with serve(tmp_path, parallel="cfg=2", max_batch_size=4) as running:
        lanes = running.worker.engine.runner
        assert lanes is not None
        runner = lanes.runners[0]
        held = StepRecorder(runner.family, hold_at=2)  # the first batch waits before its second step
        runner.family = held
        body = {"model": "tiny", "prompt": "a red circle", "seconds": "1", "num_inference_steps": 6,
                "guidance_scale": 5.0}
        first = running.client.post("/v1/videos", json={**body, "seed": 1}).json()["id"]
        assert held.held.wait(60), "the batch never reached its second step"
        later = [running.client.post("/v1/videos", json={**body, "seed": seed}).json()["id"] for seed in (2, 3)]
        ranks = running.worker.model.ranks
        (lost,) = ranks.pids()
        kill(lost, ranks)
        held.gate.set()
        videos = {video_id: wait_until(lambda v=video_id: _final(running, v), timeout=120)
                  for video_id in [first, *later]}
        metrics = running.client.get("/metrics").text
        contents = {video_id: running.client.get(f"/v1/videos/{video_id}/content").content for video_id in videos}
    assert {video["status"] for video in videos.values()} == {"completed"}, videos
    assert ranks.restarts == 1
    assert "reelserve_parallel_rank_failures_total 1.0" in metrics
    assert "reelserve_parallel_restart_seconds_count 1.0" in metrics
    assert 'reelserve_jobs_finished_total{status="completed"} 3.0' in metrics  # each once, none twice
    for video_id, content in contents.items():
        with av.open(_write(tmp_path / f"{video_id}.mp4", content)) as container:
            assert sum(1 for _ in container.decode(video=0)) == videos[video_id]["num_frames"]


def _final(running, video_id: str):  # type: ignore[no-untyped-def]
    video = running.client.get(f"/v1/videos/{video_id}").json()
    return video if video["status"] in ("completed", "failed", "cancelled") else None


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_rank_0s_own_error_fails_the_call_as_itself_and_the_group_is_built_again() -> None:
    """Not a lost rank (the followers are alive, stuck mid-exchange): the error stands, so the batch fails
    rather than runs again, and the group is rebuilt for the next call."""
    with tiny_group() as (ranks, family, rows):
        real = ranks.state.evaluate

        def broken(call, tensors):  # type: ignore[no-untyped-def]
            raise ValueError("rank 0 fell over")

        ranks.state.evaluate = broken  # type: ignore[method-assign]
        with torch.inference_mode():
            with pytest.raises(ValueError, match="fell over"):
                family.denoise_step(rows)
            assert ranks.restarts == 1
            ranks.state.evaluate = real  # type: ignore[method-assign]
            assert family.denoise_step(rows).shape == rows[0].latents.shape


def test_a_follower_that_cannot_load_fails_the_start_at_once_saying_why() -> None:
    """Before the rendezvous, so no collective waits for it until the group's timeout; the follower that
    did load is stopped too (it would wait in the rendezvous, holding its model)."""
    pipeline, _, _ = build("tiny", 0)
    ranks = ParallelRanks(GroupSpec(ParallelLayout.parse("ring=3"), functools.partial(build, "tiny-not-on-rank-2"),
                                    threads=1, timeout_s=120), pipeline, None)
    try:
        with pytest.raises(RankFailure, match="reelserve-rank-2 failed while the parallel group started: "
                                              "FileNotFoundError: no weights at /models/tiny on this rank"):
            ranks.start()
        assert not [p.name for p in multiprocessing.active_children() if p.name.startswith("reelserve-rank-")]
    finally:
        ranks.close()
