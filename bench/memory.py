"""Peak resident memory of this process: the kernel's high-water mark plus a sampler for when it happened."""

from __future__ import annotations

import resource
import threading
from types import TracebackType

import psutil

_MB = 1024 * 1024


def max_rss_mb() -> float:
    """``ru_maxrss`` of this process in MB (Linux reports KiB): its whole-life peak, sampled by the kernel."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Samples this process's RSS every ``interval_s`` in a thread: ``start_mb`` and ``peak_mb`` of the block."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval_s = interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.start_mb = 0.0
        self.peak_mb = 0.0

    def _sample(self) -> float:
        rss = float(self._proc.memory_info().rss) / _MB
        self.peak_mb = max(self.peak_mb, rss)
        return rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.start_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
