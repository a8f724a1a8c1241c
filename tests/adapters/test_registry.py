"""The adapters' index under concurrent changes: every add and delete lands, whether the changes come
from threads of one process (the registry's own lock) or from several processes (a Redis lock)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import redis
import torch
from safetensors.torch import save

from reelserve.adapters.registry import INDEX_KEY, AdapterInfo, AdapterRegistry
from reelserve.redis_names import RedisKeys
from reelserve.storage.local import LocalStorage

WRITERS = 8
OVERLAP_S = 0.05


class SlowIndexStorage(LocalStorage):
    """Local storage whose index read waits (up to ``OVERLAP_S``) for another change to read it too, as
    a slow round trip would let it: changes made at once without a lock then surely overlap between
    reading the index and writing it back. It counts how many ever did."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.changing, self.most_at_once = 0, 0
        self._count = threading.Condition()

    def get(self, key: str) -> bytes:
        if key == INDEX_KEY:
            with self._count:
                self.changing += 1
                self.most_at_once = max(self.most_at_once, self.changing)
                self._count.notify_all()
                # Under a lock no other change can come: the wait ends at its deadline.
                self._count.wait_for(lambda: self.changing > 1, timeout=OVERLAP_S)
        return super().get(key)

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if key == INDEX_KEY:
            with self._count:
                self.changing -= 1


def adapter_bytes() -> bytes:
    return save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4),
                 "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(4, 2)})


def change_at_once(registries: list[AdapterRegistry], change: Callable[[AdapterRegistry, int], None]) -> None:
    start = threading.Barrier(WRITERS)

    def run(i: int) -> None:
        start.wait()
        change(registries[i % len(registries)], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)


def names(storage: SlowIndexStorage) -> list[str]:
    """The names in the stored index, read past the counting."""
    return sorted(json.loads(LocalStorage.get(storage, INDEX_KEY)))


def add(registry: AdapterRegistry, i: int) -> None:
    registry.add(AdapterInfo(name=f"a{i}", sha256="", model="tiny", bytes=0), adapter_bytes())


def test_threads_of_one_process_add_and_delete_at_once_and_every_change_lands(tmp_path: Path) -> None:
    storage = SlowIndexStorage(tmp_path)
    registry = AdapterRegistry(storage, ttl_s=0)
    change_at_once([registry], add)
    assert names(storage) == sorted(f"a{i}" for i in range(WRITERS))
    change_at_once([registry], lambda r, i: r.delete(f"a{i}") if i % 2 else None)
    assert names(storage) == sorted(f"a{i}" for i in range(0, WRITERS, 2))
    assert storage.most_at_once == 1


def test_processes_sharing_storage_change_it_under_one_redis_lock(tmp_path: Path, redis_server) -> None:
    storage = SlowIndexStorage(tmp_path)
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(2)]  # a connection each, as processes have
    key = RedisKeys().adapters_lock()
    registries = [AdapterRegistry(storage, ttl_s=0, write_lock=lambda c=c: c.lock(key, timeout=30, blocking_timeout=30))
                  for c in clients]
    change_at_once(registries, add)
    assert names(storage) == sorted(f"a{i}" for i in range(WRITERS))
    assert storage.most_at_once == 1 and not clients[0].exists(key)  # released after each change
    for client in clients:
        client.close()
