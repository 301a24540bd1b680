"""The distinct matches of one search, kept as 8-byte hashes: the count a searchset's ``total`` is checked against.

Memory is bounded by the number of matches, not by their ids' length: one 8-byte slot per match in an
open-addressing table kept at most half full, so at most 32 bytes per distinct match, and 1.5x that while the
table doubles (1M matches: a 16 MiB table, 24 MiB at the peak; measured). Hashes are BLAKE2b keyed per table,
so a server cannot craft collisions. A collision (two ids, one hash: odds of 1 in 30 million over a million
matches) can only make a search look short of its ``total`` or a page look repeated, which the caller recovers
from by searching again: it never hides a match that did not arrive.
"""

from __future__ import annotations

import os
from array import array
from hashlib import blake2b

__all__ = ["DistinctMatches"]

_FIRST_SLOTS = 1024


def _empty(size: int) -> array[int]:
    return array("Q", [0]) * size  # allocated once (``array("Q", bytes(...))`` copies a temporary)


class DistinctMatches:
    """How many distinct ``(resourceType, id)`` a search returned; ``add`` says whether one is new."""

    __slots__ = ("_key", "_mask", "_size", "_slots")

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self._slots = _empty(_FIRST_SLOTS)
        self._mask = _FIRST_SLOTS - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, resource_type: str, resource_id: str) -> bool:
        """Record one match; True when it was not seen before in this search."""
        digest = blake2b(f"{resource_type}/{resource_id}".encode(), digest_size=8, key=self._key).digest()
        value = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        if not self._insert(self._slots, self._mask, value):
            return False
        self._size += 1
        if 2 * self._size > self._mask + 1:
            self._grow()
        return True

    @staticmethod
    def _insert(slots: array[int], mask: int, value: int) -> bool:
        i = value & mask
        while (held := slots[i]) != 0:
            if held == value:
                return False
            i = (i + 1) & mask
        slots[i] = value
        return True

    def _grow(self) -> None:
        size = 2 * (self._mask + 1)
        slots = _empty(size)
        for value in self._slots:
            if value:
                self._insert(slots, size - 1, value)
        self._slots, self._mask = slots, size - 1
