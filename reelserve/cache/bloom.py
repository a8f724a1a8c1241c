"""A Bloom filter of the keys in Redis, so most misses are answered without a network round trip.

It can say "certainly not stored" or "maybe stored", never "certainly stored". It cannot forget a
key, so deletions and expiries only raise the false-positive rate until the next ``rebuild``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rbloom import Bloom


def stable_hash(key: str) -> int:
    """A 128-bit signed hash that is the same in every process and run (unlike ``hash(str)``),
    so a saved filter stays valid. Keys are usually sha256 hex, but any string works."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "big", signed=True)


class KeyFilter:
    """
    :param expected_items: the filter keeps ``false_positive_rate`` up to this many keys
        (1e6 keys at 1% take about 1.2 MB).
    :param false_positive_rate: chance that an absent key is reported as maybe present.
    """

    def __init__(self, expected_items: int = 1_000_000, false_positive_rate: float = 0.01) -> None:
        self.expected_items = expected_items
        self.false_positive_rate = false_positive_rate
        self._bloom = self._empty()

    def add(self, key: str) -> None:
        self._bloom.add(key)

    def might_contain(self, key: str) -> bool:
        return key in self._bloom

    def rebuild(self, keys: Iterable[str]) -> int:
        """Replace the filter with one holding exactly ``keys``; returns how many were added."""
        fresh = self._empty()
        count = 0
        for key in keys:
            fresh.add(key)
            count += 1
        self._bloom = fresh
        return count

    def clear(self) -> None:
        self._bloom = self._empty()

    def _empty(self) -> Bloom:
        return Bloom(self.expected_items, self.false_positive_rate, stable_hash)
