"""Counting what ``gzip.GzipFile`` inflates, for tests that a gzip file is read no further than a limit."""

from __future__ import annotations

import gzip
from collections import defaultdict
from collections.abc import Callable

import pytest

__all__ = ["count_inflated"]

_Read = Callable[[gzip.GzipFile, int], bytes]


def count_inflated(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """From now on (until ``monkeypatch`` undoes it), the bytes each ``GzipFile`` hands out, by object id."""
    counts: dict[int, int] = defaultdict(int)

    def counted(original: _Read) -> _Read:
        def call(self: gzip.GzipFile, size: int = -1) -> bytes:
            data = original(self, size)
            counts[id(self)] += len(data)
            return data

        return call

    monkeypatch.setattr(gzip.GzipFile, "read", counted(gzip.GzipFile.read))
    monkeypatch.setattr(gzip.GzipFile, "readline", counted(gzip.GzipFile.readline))
    return counts
