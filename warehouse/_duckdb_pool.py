"""In-memory DuckDB instances kept idle between uses, per process: the readers' and the writer's.

Opening a DuckDB database builds a whole instance, about 14 ms of CPU; attaching the warehouse file to an instance
already open costs under 1 ms (docs/PERFORMANCE.md). An idle instance holds DuckDB's worker and I/O threads and a few
MB, so a pool keeps only a few, keyed by the configuration they were opened with. Every idle instance is closed
before the process forks (the child's copy has none of DuckDB's threads, and destroying it there crashed the child:
SIGSEGV) and at exit (one freed after the interpreter tore ``duckdb`` down is reported leaked on stderr).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable

import duckdb

__all__ = ["InstancePool", "Key"]

Key = tuple[tuple[str, str], ...]  # the configuration an instance was opened with


class InstancePool:
    """At most ``max_idle`` idle instances; with ``max_busy``, at most that many in use at once (``take`` then
    answers None and the caller does without one)."""

    def __init__(self, max_idle: int, max_busy: int | None = None) -> None:
        self.max_idle, self.max_busy = max_idle, max_busy
        self._lock = threading.Lock()
        self._idle: list[tuple[Key, duckdb.DuckDBPyConnection]] = []  # oldest first
        self._busy = 0  # instances taken or opened, not yet given back or closed
        os.register_at_fork(
            before=self._close_idle_before_fork,
            after_in_parent=self._lock.release,
            after_in_child=self._after_fork_in_child,
        )
        atexit.register(self.close_idle)

    def take(self, key: Key, open_: Callable[[], duckdb.DuckDBPyConnection]) -> duckdb.DuckDBPyConnection | None:
        """An idle instance opened with ``key``, else ``open_()``, in use until ``give_back``; None when
        ``max_busy`` are in use already."""
        with self._lock:
            for index, (opened_with, conn) in enumerate(self._idle):
                if opened_with == key:
                    del self._idle[index]
                    self._busy += 1
                    return conn
            if self.max_busy is not None and self._busy >= self.max_busy:
                return None
            self._busy += 1
        try:
            return open_()
        except BaseException:
            self.give_back(None)
            raise

    def give_back(self, conn: duckdb.DuckDBPyConnection | None, key: Key | None = None) -> None:
        """An instance done with: kept idle when ``key`` is given (the oldest idle past ``max_idle`` closed), else
        closed (None: the caller closed it already)."""
        with self._lock:
            self._busy -= 1
            if conn is not None and key is not None:
                self._idle.append((key, conn))
                conn = None
                while len(self._idle) > self.max_idle:
                    self._idle.pop(0)[1].close()
        if conn is not None:
            conn.close()

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def _close_idle_before_fork(self) -> None:
        """Close every idle instance and hold the lock until the fork is done (none is given back meanwhile)."""
        self._lock.acquire()
        while self._idle:
            self._idle.pop()[1].close()

    def close_idle(self) -> None:
        self._close_idle_before_fork()
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        """The parent's instances in use are not the child's: it counts its own from none."""
        self._busy = 0
        self._lock.release()
