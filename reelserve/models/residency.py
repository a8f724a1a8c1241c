"""Which models' weights are on the device, under a memory budget: the parts a server that serves several
models (``--model`` repeated) swaps them with.

``WeightSwap`` moves one model's weights off the device and back in place: the very Parameter and buffer
objects stay (the modules, the pipeline lanes that share them and any hooks keep their references), only
their storage goes elsewhere meanwhile: host memory when the model runs on a GPU, a file on disk when it
runs on the CPU (whose memory is the host's). ``DeviceMemory`` keeps the models that fit resident, brings
one in on demand and sends the least recently used idle ones out for room, and says what a swap costs
(measured; before the first, estimated from the bytes) so the scheduler can count it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

# A swap's seconds before one was measured: a guess from the bytes (host to device, or disk to memory).
ASSUMED_BYTES_PER_S = {"cuda": 10e9, "cpu": 1e9}


class WeightSwap:
    """One model's weights, movable off its device and back. :param modules: every module of the model
    (shared tensors counted once). :param spill: where a CPU model's weights go while out."""

    def __init__(self, modules: list[torch.nn.Module], device: torch.device, spill: Path) -> None:
        self.device, self.spill = device, spill
        tensors: dict[int, torch.Tensor] = {}
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                tensors.setdefault(id(tensor), tensor)
        self.tensors = list(tensors.values())
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tensors)
        self.resident = True
        self._away: list[torch.Tensor] = []  # on a GPU: the host copies while out
        self._spilled = False  # on the CPU: the file holds them (weights never change while served)

    def evict(self) -> None:
        if not self.resident:
            return
        if self.device.type == "cpu":
            if not self._spilled:
                self.spill.parent.mkdir(parents=True, exist_ok=True)
                torch.save([t.data for t in self.tensors], self.spill)
                self._spilled = True
            for tensor in self.tensors:
                tensor.data = torch.empty(0, dtype=tensor.dtype)
        else:
            self._away = [t.data.to("cpu") for t in self.tensors]
            for tensor in self.tensors:
                tensor.data = torch.empty(0, dtype=tensor.dtype, device=self.device)
        self.resident = False

    def bring_in(self) -> None:
        if self.resident:
            return
        if self.device.type == "cpu":
            stored = torch.load(self.spill, mmap=True, weights_only=True)
        else:
            stored = [t.to(self.device) for t in self._away]
        for tensor, data in zip(self.tensors, stored, strict=True):
            tensor.data = data
        self._away = []
        self.resident = True


class DeviceMemory:
    """The models on one device within ``budget_bytes`` (None: no budget, every model stays).

    Weights move outside the lock (a swap takes seconds; a model finishing, or asking what a swap costs,
    must not wait for another's): the room is planned under it, and a model on the move (in or out) is
    counted as on the device and is no one else's to move until it has arrived.

    :param on_swap: (model, "in" or "out", seconds) for each move, for metrics."""

    def __init__(self, budget_bytes: int | None, on_swap: Callable[[str, str, float], None] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.on_swap = on_swap or (lambda model, direction, seconds: None)
        self._swaps: dict[str, WeightSwap] = {}
        self._in_use: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._swap_in_s: dict[str, float] = {}  # the last measured bring-in
        self._waiting: dict[str, int] = {}  # calls waiting for room, by model
        self._moving: set[str] = set()  # models whose weights are going out or coming in now
        self._changed = threading.Condition()
        self.swaps_in = 0

    def add(self, name: str, swap: WeightSwap) -> None:
        """A loaded model (resident); others go out if it needs their room and they are idle."""
        if self.budget_bytes is not None and swap.nbytes > self.budget_bytes:
            raise ValueError(f"model {name} needs {swap.nbytes / 2**20:.0f} MiB of device memory and the budget "
                             f"is {self.budget_bytes / 2**20:.0f} MiB; raise --device-memory-mb or serve it elsewhere")
        with self._changed:
            self._swaps[name] = swap
            self._in_use[name] = 0
            self._last_used[name] = time.monotonic()
            victims = self._room_for(name) or []
            self._moving.update(victims)
        self._move(victims, None)

    def resident(self, name: str) -> bool:
        """Whether ``name``'s weights are on the device (False for a model not added yet)."""
        swap = self._swaps.get(name)
        return swap is not None and swap.resident

    def swap_cost(self, name: str) -> float:
        """Seconds before ``name`` could run for its weights alone: 0 when resident."""
        swap = self._swaps.get(name)
        if swap is None or swap.resident:
            return 0.0
        guess = swap.nbytes / ASSUMED_BYTES_PER_S.get(swap.device.type, 1e9)
        return self._swap_in_s.get(name, guess)

    @contextmanager
    def use(self, name: str, timeout_s: float = 3600.0) -> Iterator[float]:
        """Hold ``name`` resident for a call; yields the seconds it took to bring it in (0: it was in).
        Waits while the room it needs is held by models in use, or while it is on the move."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            wants_room = False  # waiting for room (contending), not for its own weights to arrive
            try:
                while (victims := self._room_for(name)) is None:
                    if wants_room == (name in self._moving):
                        wants_room = not wants_room
                        self._waiting[name] = self._waiting.get(name, 0) + (1 if wants_room else -1)
                    if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                        raise TimeoutError(f"model {name} waited {timeout_s:.0f}s for device memory")
            finally:
                if wants_room:
                    self._waiting[name] -= 1
            self._in_use[name] += 1
            coming = None if self._swaps[name].resident else name
            self._moving.update([*victims, *([coming] if coming else [])])
        try:
            yield self._move(victims, coming)
        finally:
            with self._changed:
                self._in_use[name] -= 1
                self._last_used[name] = time.monotonic()
                self._changed.notify_all()

    def contended(self, name: str) -> bool:
        """Whether another model waits for room while ``name`` runs: its batch should stop taking joiners
        and end, so that the other model's jobs do not wait behind it for ever."""
        return any(count and other != name for other, count in self._waiting.items())

    def evict_idle(self) -> None:
        """Every idle model out (before loading another one, so that it loads into room that is free)."""
        with self._changed:
            victims = [name for name in self._swaps if self._movable(name)]
            self._moving.update(victims)
        self._move(victims, None)

    def _move(self, going: list[str], coming: str | None) -> float:
        """Sends ``going`` out, then brings ``coming`` in (outside the lock; each is marked as moving);
        returns the seconds the bring-in took."""
        try:
            for victim in going:
                started = time.perf_counter()
                self._swaps[victim].evict()
                self.on_swap(victim, "out", time.perf_counter() - started)
            if coming is None:
                return 0.0
            started = time.perf_counter()
            self._swaps[coming].bring_in()
            seconds = time.perf_counter() - started
            with self._changed:
                self._swap_in_s[coming] = seconds
                self.swaps_in += 1
            self.on_swap(coming, "in", seconds)
            return seconds
        finally:
            with self._changed:
                self._moving.difference_update([*going, *([coming] if coming else [])])
                self._changed.notify_all()

    def _room_for(self, name: str) -> list[str] | None:
        """The idle models to send out, least recently used first, for ``name`` to fit; None if it
        cannot yet (the room is held by models in use or on the move, or ``name`` itself is moving)."""
        if name in self._moving:
            return None
        if self.budget_bytes is None:
            return []
        free = self.budget_bytes - self._used() - (0 if self._swaps[name].resident else self._swaps[name].nbytes)
        victims = []
        for victim in sorted((n for n in self._swaps if n != name and self._movable(n)), key=self._last_used.__getitem__):
            if free >= 0:
                break
            victims.append(victim)
            free += self._swaps[victim].nbytes
        return victims if free >= 0 else None

    def _movable(self, name: str) -> bool:
        return self._swaps[name].resident and not self._in_use[name] and name not in self._moving

    def _used(self) -> int:
        return sum(s.nbytes for n, s in self._swaps.items() if s.resident or n in self._moving)


def model_swap(model: Any, spill: Path) -> WeightSwap:
    """A loaded model's swap: every module of its pipeline and of its lanes' copies (which share the
    very same tensors), on its device."""
    modules = [module for lane in (model.lanes or [model]) for module in vars(lane.pipeline).values()
               if isinstance(module, torch.nn.Module)]
    return WeightSwap(modules, model.device, spill)
