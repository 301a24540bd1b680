"""A small bounded cache of recent values: what any long-lived process keeps per server it meets (discovered
configurations, key sets, hosts found unreachable) must not grow with the number of servers it has ever met."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["RecentCache"]

_V = TypeVar("_V")


class RecentCache(Generic[_V]):
    """At most ``cap`` values, each kept ``ttl`` seconds: an expired one is dropped when read and when any value is
    stored, and past ``cap`` the least recently used goes. Thread-safe."""

    def __init__(self, ttl: float, cap: int, clock: Callable[[], float]) -> None:
        if cap < 1:
            raise ValueError("cap must be positive")
        self._ttl, self._cap, self._clock = ttl, cap, clock
        self._entries: OrderedDict[str, tuple[float, _V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str) -> _V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self._ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: _V) -> None:
        with self._lock:
            now = self._clock()
            for stale in [k for k, (at, _) in self._entries.items() if now - at >= self._ttl]:
                del self._entries[stale]
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._cap:
                self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
