"""One worker's process group: rank 0 is the worker itself (queue, batching, rows, schedulers, previews;
everything the engine does), and the other ranks are processes it starts that hold the same model and
take part in each transformer evaluation and each decode it sends them.

Commands go to the followers over a pipe each (so an idle follower waits on nothing with a timeout), and
their tensors by broadcast from rank 0 in the process group (NCCL on GPUs, gloo on CPU). A follower
that dies, or a collective that fails or times out, raises ``RankFailure`` in rank 0, which has already
built the group again (killed what was left, new processes, a new rendezvous): the batch's jobs are
retried by the engine, none lost.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

from reelserve.parallel.attention import SequenceShards
from reelserve.parallel.commands import Decode, Forward, GroupSpec, Prime, TensorSpec, specs_of
from reelserve.parallel.decode import SharedDecode
from reelserve.parallel.failure import RankFailure
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.sharding import shard_transformer
from reelserve.parallel.step_caches import agree_on_skips

log = logging.getLogger(__name__)

EXPERTS = ("transformer", "transformer_2")


class RankState:
    """What every rank holds: its model, its place in the layout, its groups."""

    def __init__(self, layout: ParallelLayout, rank: int, pipeline: Any, bank: Any) -> None:
        self.layout, self.rank, self.pipeline, self.bank = layout, rank, pipeline, bank
        self.cfg_index, ulysses_index, ring_index = layout.coordinates(rank)
        self.shards = SequenceShards(layout, ulysses_index, ring_index)
        self.device = _device_of(pipeline)
        self.decoder = SharedDecode(pipeline.vae, rank, layout.world)
        for expert in EXPERTS:
            if (transformer := getattr(pipeline, expert, None)) is not None:
                shard_transformer(transformer, self.shards)

    def join_groups(self) -> None:
        """Make every sub-group (a collective: all ranks, in the same order) and keep this rank's."""
        layout, shards = self.layout, self.shards
        mine: dict[str, Any] = {}
        for kind, groups in layout.groups().items():
            for ranks in groups:
                group = dist.new_group(ranks) if len(ranks) > 1 else None
                if self.rank in ranks:
                    mine[kind] = group
                    if kind == "ring":
                        shards.ring_ranks = ranks
        shards.ulysses_group, shards.ring_group, shards.sequence_group = mine["ulysses"], mine["ring"], mine["sequence"]

    def agree_on_skips(self, accelerated: Any) -> None:
        """A step cache on a sequence split: every rank of it skips what the whole sequence says."""
        cache = accelerated.step_cache if accelerated is not None else None
        if cache is not None and self.layout.sequence > 1:
            cache.on_enable = lambda transformer: agree_on_skips(transformer, lambda: self.shards.sequence_group)

    def evaluate(self, call: Forward, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's branches of the evaluation (both on a layout without cfg), each whole; with
        ``split_rows``, the cond branch of its half of the rows."""
        model = getattr(self.pipeline, call.expert)
        branches = ("cond", "uncond") if call.guided else ("cond",)
        mine = branches if self.layout.cfg == 1 or call.split_rows else branches[self.cfg_index : self.cfg_index + 1]
        wanted = list(call.adapters)
        if call.split_rows:
            tensors = {name: t.tensor_split(2)[self.cfg_index] for name, t in tensors.items()}
            wanted = wanted[slice(*self.half(len(wanted)))]
        self.pipeline._current_timestep = call.timestep
        adapters = self.bank.rows(wanted) if wanted and any(wanted) else nullcontext()
        out = {}
        with adapters:
            for branch in mine:
                embeds = tensors["prompts" if branch == "cond" else "negatives"]
                with model.cache_context(branch, **call.context):
                    out[branch] = model(hidden_states=tensors["latents"], timestep=tensors["timestep"],
                                        encoder_hidden_states=embeds, return_dict=False)[0]
        return out

    def half(self, rows: int) -> tuple[int, int]:
        """The rows this rank's half of a ``split_rows`` call takes (``tensor_split``'s cut)."""
        first = (rows + 1) // 2
        return (0, first) if self.cfg_index == 0 else (first, rows)

    def cfg_peer(self) -> bool:
        """The rank that hands rank 0 the other half's result under ``cfg=2`` (its branch or its rows)."""
        return self.layout.cfg == 2 and self.rank == self.layout.rank_of(1, 0, 0)

class ParallelRanks:
    """Rank 0's side of the group: starts the followers, sends each evaluation and decode, and builds
    the group again when a rank is lost."""

    def __init__(self, spec: GroupSpec, pipeline: Any, bank: Any) -> None:
        self.spec, self.layout = spec, spec.layout
        self.state = RankState(spec.layout, 0, pipeline, bank)
        self.followers: list[tuple[multiprocessing.Process, Connection]] = []
        self.restarts = 0  # times the group was built again after losing a rank
        self.on_restart: Callable[[float], None] | None = None  # seconds a rebuild took (metrics)
        # Unguided rows under cfg=2 go half to each half of the ranks; not with a step cache, whose skips
        # are decided over the whole batch in one process.
        self.split_unguided_rows = True
        self.broken = False  # a rebuild failed; the next call builds the group first

    @property
    def world(self) -> int:
        return self.layout.world

    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.followers if process.pid is not None]  # rank 1 first

    def start(self) -> None:
        _nccl_errors_as_exceptions(self.spec.backend)
        context = _process_context(self.spec)
        address = f"tcp://127.0.0.1:{_free_port()}"
        for rank in range(1, self.world):
            ours, theirs = context.Pipe()
            process = context.Process(target=follow, args=(self.spec, rank, address, theirs),
                                      name=f"reelserve-rank-{rank}", daemon=True)
            process.start()
            theirs.close()
            self.followers.append((process, ours))
        try:
            # Every follower has its model before the rendezvous: one that fails to load (the likely
            # failure) is seen at once, not after a collective that waits for it times out.
            self._wait_for("loaded")
            timeout = timedelta(seconds=self.spec.timeout_s)
            dist.init_process_group(self.spec.backend, init_method=address, rank=0, world_size=self.world,
                                    timeout=timeout)
            self.state.join_groups()
            self._wait_for("joined")
        except BaseException:
            self._stop(kill=True)  # the others would wait in the rendezvous, each holding a model
            raise
        log.info("parallel group %s: ranks %s started", self.layout, self.pids())

    def _wait_for(self, stage: str) -> None:
        """Each follower's word that it reached ``stage``; RankFailure if one fails, exits or is late."""
        deadline = time.monotonic() + self.spec.timeout_s
        waiting = {conn: process for process, conn in self.followers}
        while waiting:
            ready = wait([*waiting, *(p.sentinel for p in waiting.values())], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RankFailure(f"the parallel group's ranks were not {stage} within {self.spec.timeout_s:.0f}s")
            for conn in [c for c in waiting if c in ready]:
                try:
                    said = conn.recv()
                except EOFError:  # it exited: reported below
                    continue
                if said != stage:
                    raise RankFailure(f"{waiting[conn].name} failed while the parallel group started: {said}")
                del waiting[conn]
            if dead := [p.name for p in waiting.values() if not p.is_alive()]:
                raise RankFailure(f"{', '.join(dead)} exited while the parallel group started")

    def forward(self, call: Forward, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both branches of the evaluation, whole, on rank 0."""
        rows = tensors["latents"].shape[0]
        if self.layout.cfg == 2 and not call.guided and rows > 1 and self.split_unguided_rows:
            call = replace(call, split_rows=True)

        def run() -> dict[str, torch.Tensor]:
            self._send(call, tensors)
            out = self.state.evaluate(call, tensors)
            if self.layout.cfg == 2 and (call.guided or call.split_rows):
                cond = out["cond"]
                shape = cond.shape if call.guided else (rows - cond.shape[0], *cond.shape[1:])
                theirs = torch.empty(shape, dtype=cond.dtype, device=cond.device)  # contiguous, as recv needs
                dist.recv(theirs, src=self.layout.rank_of(1, 0, 0))
                out = {"cond": cond, "uncond": theirs} if call.guided else {"cond": torch.cat([cond, theirs])}
            return out

        return self._guarded(run)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Every row of ``latents`` decoded, its tiles or its rows shared among the ranks (``decode.py``):
        (B, 3, F, H, W)."""
        def run() -> torch.Tensor:
            self._send(Decode(specs_of({"latents": latents})), {"latents": latents})
            return self.state.decoder.gather(latents)

        return self._guarded(run)

    def prime(self, steps: int | None) -> None:
        """Have every follower prime its accelerations as rank 0 does (``Accelerated.on_prime``)."""
        self._guarded(lambda: self._send(Prime(steps), {}))

    def _send(self, call: Forward | Decode | Prime, tensors: dict[str, torch.Tensor]) -> None:
        dead = [process.name for process, _ in self.followers if not process.is_alive()]
        if dead:
            raise RankFailure(f"{', '.join(dead)} is not running")
        for _, conn in self.followers:
            conn.send(call)
        for spec in call.tensors:
            dist.broadcast(tensors[spec.name].contiguous(), src=0)

    def _guarded(self, run: Callable[[], Any]) -> Any:
        """``run()``; after any failure the group is built again (ranks left mid-collective cannot go on).
        A lost rank, or a collective that failed or timed out, raises ``RankFailure`` (the batch runs
        again); rank 0's own error (a bad input, a bug) is raised as it is (the batch fails)."""
        if self.broken:  # the last rebuild failed: try again before anything is sent
            self._rebuild(RankFailure("the parallel group is being built again"))
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - sorted below; the group is rebuilt either way
            lost = self._lost(exc)
            log.warning("parallel group %s: %s; building it again", self.layout,
                        lost if lost is not None else f"rank 0 failed ({type(exc).__name__}: {exc})")
            self._rebuild(lost or exc)
            if lost is None:
                raise
            raise lost from exc

    def _lost(self, exc: Exception) -> RankFailure | None:
        """The failure as a lost rank, or None when it is rank 0's own: a follower that has exited (given a
        moment to be reaped) or an error of the process group itself."""
        if isinstance(exc, RankFailure):
            return exc
        sentinels = [process.sentinel for process, _ in self.followers]
        exited = wait(sentinels, timeout=1.0) if sentinels else []
        text = str(exc).lower()
        of_the_group = any(word in text for word in ("gloo", "nccl", "timed out", "connection"))
        if exited or of_the_group or isinstance(exc, (dist.DistError, EOFError, BrokenPipeError, ConnectionError)):
            return RankFailure(f"{type(exc).__name__}: {exc}")
        return None

    def _rebuild(self, failure: Exception) -> None:
        """Kill what is left and start again; when that fails too, the group stays ``broken`` (the next
        call tries again) and the call's ``failure`` stands as a lost rank (its batch runs again)."""
        started = time.perf_counter()
        try:
            self.restart()
        except Exception as exc:  # noqa: BLE001 - a follower that cannot start: the next call retries
            self.broken = True
            log.warning("building the parallel group %s again failed (%s: %s)", self.layout, type(exc).__name__, exc)
            raise RankFailure(f"{failure}; building the group again failed: {exc}") from exc
        self.broken = False
        if self.on_restart is not None:
            self.on_restart(time.perf_counter() - started)

    def restart(self) -> None:
        self._stop(kill=True)
        self.restarts += 1
        self.start()

    def close(self) -> None:
        self._stop(kill=False)

    def _stop(self, kill: bool) -> None:
        for process, conn in self.followers:
            try:
                if not kill:
                    conn.send(None)
            except OSError:
                pass
            conn.close()
        for process, _ in self.followers:
            if kill and process.is_alive():
                process.kill()
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        self.followers = []
        if dist.is_initialized():
            dist.destroy_process_group()


def follow(spec: GroupSpec, rank: int, address: str, conn: Connection) -> None:
    """A follower's life: build the model, join the group, then run each command rank 0 sends until it
    sends None or goes away."""
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    if spec.backend == "nccl":
        torch.cuda.set_device(rank)
    _nccl_errors_as_exceptions(spec.backend)
    try:
        pipeline, bank, accelerated = spec.build(rank)
        state = RankState(spec.layout, rank, pipeline, bank)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")  # rank 0 says why, at once
        raise
    conn.send("loaded")
    dist.init_process_group(spec.backend, init_method=address, rank=rank, world_size=spec.layout.world,
                            timeout=timedelta(seconds=spec.timeout_s))
    state.join_groups()
    state.agree_on_skips(accelerated)
    conn.send("joined")
    with torch.inference_mode():
        while True:
            try:
                call = conn.recv()
            except EOFError:  # rank 0 is gone
                break
            if call is None:
                break
            tensors = _receive(call.tensors, state.device)
            if isinstance(call, Prime):
                if accelerated is not None and call.steps is not None:
                    accelerated.before_call(call.steps, None)
                elif accelerated is not None:
                    accelerated.rows_dropped(None)
            elif isinstance(call, Forward):
                out = state.evaluate(call, tensors)
                if (call.guided or call.split_rows) and state.cfg_peer():
                    dist.send(out["uncond" if call.guided else "cond"].contiguous(), dst=0)
            else:
                state.decoder.send_share(tensors["latents"])
    dist.destroy_process_group()
    os._exit(0)  # no interpreter teardown: the model's threads and the group are gone with the process


def _nccl_errors_as_exceptions(backend: str) -> None:
    """NCCL's default on a failed or timed-out collective is its watchdog aborting the process; blocking
    waits raise in the caller instead, so rank 0 can rebuild its group (untested here: no GPU was lent)."""
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")


def _process_context(spec: GroupSpec) -> multiprocessing.context.BaseContext:
    """Followers on the CPU fork from a server process that imported torch, diffusers and the model's
    builder once (and ran nothing: no thread pool to break in a fork), so a group's start, and its
    rebuild after a lost rank, skips each follower's imports (6.4 -> 0.3 s for tiny's two ranks here).
    On GPUs they are spawned: an import that asks for the CUDA devices would leave every fork unable
    to use them."""
    method = spec.start_method or ("spawn" if spec.backend == "nccl" else "forkserver")
    context = multiprocessing.get_context(method)
    if method != "forkserver":
        return context
    builder = getattr(spec.build, "func", spec.build)  # a functools.partial's function
    context.set_forkserver_preload(["torch", "diffusers", __name__, builder.__module__])
    return context


def _receive(specs: tuple[TensorSpec, ...], device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {}
    for spec in specs:
        tensors[spec.name] = torch.empty(spec.shape, dtype=spec.dtype, device=device)
        dist.broadcast(tensors[spec.name], src=0)
    return tensors


def _device_of(pipeline: Any) -> torch.device:
    return next((pipeline.transformer or pipeline.transformer_2).parameters()).device


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
