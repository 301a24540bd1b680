"""A bound on the one refusal warning an outsider can trigger at will: a cookie, form token or connect link sealed
under a key id this service is not configured with (or a placeholder key). The key id is read from the value before
anything is authenticated, so a forged value names any key id it likes; at warning on every request, a script could
flood the log at the level the operator watches and hide the real signal (an old key removed too early)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MAX_WARNED_KEY_IDS", "WARN_EVERY_S", "KeyIdWarnings"]

#: A key id's refusal is a warning at most once in this many seconds; its repeats meanwhile are info.
WARN_EVERY_S = 600.0
#: At most this many key ids are warned about in one ``WARN_EVERY_S``: a forger varying the key id gets info after.
MAX_WARNED_KEY_IDS = 16


@dataclass
class KeyIdWarnings:
    """The log level of each such refusal, per app instance (one per process): WARNING the first time a key id is
    refused in ``every_s``, for at most ``max_key_ids`` key ids at once; INFO otherwise (still logged: the count of
    lines stays visible at info). Memory is bounded by ``max_key_ids``."""

    every_s: float = WARN_EVERY_S
    max_key_ids: int = MAX_WARNED_KEY_IDS
    clock: Callable[[], float] = time.monotonic
    _warned: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def level(self, kid: str) -> int:
        now = self.clock()
        with self._lock:
            self._warned = {k: t for k, t in self._warned.items() if now - t < self.every_s}
            if kid in self._warned or len(self._warned) >= self.max_key_ids:
                return logging.INFO
            self._warned[kid] = now
            return logging.WARNING
