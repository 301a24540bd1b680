"""Background writer (BDX-33): keeps updating resources so clients page and sync against moving data."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sandbox.data.store import DataStore
from sandbox.mutate import mutate

log = logging.getLogger(__name__)


class BackgroundWriter:
    """Every ``interval()`` seconds (0 = idle) updates one resource and creates one Observation."""

    def __init__(self, store: DataStore, interval: Callable[[], float]) -> None:
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def poke(self) -> None:
        """Settings changed: start the thread on first use, or wake it to read the new interval."""
        if self._thread is None and self._interval() > 0:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="sandbox-writer")
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            interval = self._interval()
            self._wake.clear()
            if interval <= 0:
                self._wake.wait()
                continue
            if self._wake.wait(interval) or self._stop.is_set():
                continue
            self.rounds += 1
            mutate(self._store, create=1, update=1, delete=0, seed=10_000 + self.rounds)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
