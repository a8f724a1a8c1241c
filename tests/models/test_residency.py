"""Swapping a model's weights off the device and back, and a memory budget over several models: the
same weights (and so the same videos) after a round trip, the least recently used idle model out for
room, a model in use never out, and what a swap costs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from reelserve.models import LoadOptions, load_model
from reelserve.models.residency import DeviceMemory, WeightSwap
from support import wait_until


def tiny_swap(tmp_path: Path, name: str = "tiny") -> tuple[object, WeightSwap]:
    model = load_model("tiny", LoadOptions(device="cpu"))
    modules = [m for m in vars(model.pipeline).values() if isinstance(m, torch.nn.Module)]
    return model, WeightSwap(modules, torch.device("cpu"), tmp_path / f"{name}.pt")


def test_a_round_trip_keeps_the_weights_and_the_video(tmp_path: Path) -> None:
    model, swap = tiny_swap(tmp_path)
    before = model.generate(["a red ball"], 32, 32, 5, 2)
    first = next(model.pipeline.transformer.parameters())
    swap.evict()
    assert not swap.resident and first.numel() == 0  # the storage is gone, the Parameter stays
    assert (tmp_path / "tiny.pt").exists()
    swap.bring_in()
    assert swap.resident and next(model.pipeline.transformer.parameters()) is first and first.numel() > 0
    assert np.array_equal(model.generate(["a red ball"], 32, 32, 5, 2), before)


def test_the_least_recently_used_idle_model_goes_out_for_room(tmp_path: Path) -> None:
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    moves: list[tuple[str, str]] = []
    memory = DeviceMemory(budget_bytes=a.nbytes + a.nbytes // 2, on_swap=lambda m, d, s: moves.append((m, d)))
    memory.add("a", a)
    memory.add("b", b)  # no room for both: a, idle, goes out
    assert (memory.resident("a"), memory.resident("b")) == (False, True) and moves == [("a", "out")]
    assert memory.swap_cost("b") == 0 and memory.swap_cost("a") > 0
    with memory.use("a") as seconds:
        assert seconds > 0 and memory.resident("a") and not memory.resident("b")
    assert moves == [("a", "out"), ("b", "out"), ("a", "in")] and memory.swaps_in == 1
    with memory.use("a") as seconds:
        assert seconds == 0  # still in


def test_a_model_in_use_is_never_sent_out(tmp_path: Path) -> None:
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    memory = DeviceMemory(budget_bytes=a.nbytes)
    memory.add("a", a)
    memory.add("b", b)
    release, b_in = threading.Event(), threading.Event()

    def hold_b() -> None:
        with memory.use("b"):
            b_in.set()
            assert release.wait(30)

    holder = threading.Thread(target=hold_b)
    holder.start()
    assert b_in.wait(30)
    waiting = threading.Thread(target=lambda: memory.use("a").__enter__())
    waiting.start()
    assert memory.resident("b") and not memory.resident("a")  # a waits: b is in use
    release.set()
    holder.join(30)
    waiting.join(30)
    wait_until(lambda: memory.resident("a"))
    assert not memory.resident("b")


def test_a_model_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    _, a = tiny_swap(tmp_path)
    with pytest.raises(ValueError, match="--device-memory-mb"):
        DeviceMemory(budget_bytes=a.nbytes - 1).add("a", a)


def test_a_failed_bring_in_does_not_pin_the_model(tmp_path: Path) -> None:
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    memory = DeviceMemory(budget_bytes=a.nbytes)
    memory.add("a", a)
    memory.add("b", b)  # a out
    real = a.bring_in
    a.bring_in = lambda: (_ for _ in ()).throw(OSError("spill file unreadable"))  # type: ignore[method-assign]
    with pytest.raises(OSError), memory.use("a"):
        pass
    a.bring_in = real  # type: ignore[method-assign]
    with memory.use("a"):
        assert memory.resident("a")
    with memory.use("b", timeout_s=10):  # a, idle again, goes out: the failed call left no hold on it
        assert memory.resident("b") and not memory.resident("a")


def test_a_model_waiting_for_room_contends_with_the_one_running(tmp_path: Path) -> None:
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    memory = DeviceMemory(budget_bytes=a.nbytes)
    memory.add("a", a)
    memory.add("b", b)
    release, b_in, a_in = threading.Event(), threading.Event(), threading.Event()

    def hold_b() -> None:
        with memory.use("b"):
            b_in.set()
            assert release.wait(30)

    def want_a() -> None:
        with memory.use("a"):
            a_in.set()

    holder = threading.Thread(target=hold_b)
    holder.start()
    assert b_in.wait(30) and not memory.contended("b")
    waiter = threading.Thread(target=want_a)
    waiter.start()
    wait_until(lambda: memory.contended("b"))  # b's batch should now end rather than grow
    assert not memory.contended("a")
    release.set()
    assert a_in.wait(30)
    holder.join(30)
    waiter.join(30)
    assert not memory.contended("b")


def test_evict_idle_makes_room_before_a_load(tmp_path: Path) -> None:
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    memory = DeviceMemory(budget_bytes=10 * a.nbytes)
    memory.add("a", a)
    memory.add("b", b)
    memory.evict_idle()
    assert not memory.resident("a") and not memory.resident("b")


def test_weights_move_outside_the_lock(tmp_path: Path) -> None:
    """While a's weights come in (held here), b's call ends and the costs are read without waiting."""
    (_, a), (_, b) = tiny_swap(tmp_path, "a"), tiny_swap(tmp_path, "b")
    memory = DeviceMemory(budget_bytes=a.nbytes + b.nbytes)
    memory.add("a", a)
    memory.add("b", b)
    memory.evict_idle()
    moving, arrive = threading.Event(), threading.Event()
    real = a.bring_in

    def held_bring_in() -> None:
        moving.set()
        assert arrive.wait(30)
        real()

    a.bring_in = held_bring_in  # type: ignore[method-assign]
    b_done = threading.Event()

    def use_b() -> None:
        with memory.use("b"):
            assert moving.wait(30)
        b_done.set()  # the exit took the lock that a's bring-in would have held

    user_b = threading.Thread(target=use_b)
    user_b.start()
    user_a = threading.Thread(target=lambda: memory.use("a").__enter__())
    wait_until(lambda: memory.resident("b"))
    user_a.start()
    also_a = threading.Thread(target=lambda: memory.use("a").__enter__())  # waits for the same arrival
    try:
        assert b_done.wait(30), "b's call waited for a's weights to arrive"
        assert not memory.resident("a") and memory.swap_cost("a") > 0
        also_a.start()
    finally:
        arrive.set()
        user_a.join(30)
        also_a.join(30)
        user_b.join(30)
    assert not also_a.is_alive() and memory.resident("a") and memory.resident("b")
    assert memory.swaps_in == 2  # b once and a once: the second call for a waited for the first's bring-in
