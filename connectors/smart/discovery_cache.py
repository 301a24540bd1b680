"""Per-issuer cache of discovered SMART configurations (SAL-01)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.smart.configuration import SmartConfiguration

__all__ = ["DiscoveryCache"]


class DiscoveryCache:
    """Per-issuer cache of discovered configurations (SAL-01: TTL 1 h by default); thread-safe."""

    def __init__(self, ttl_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, SmartConfiguration]] = {}
        self._lock = threading.Lock()

    def get(self, fhir_base: str) -> SmartConfiguration | None:
        with self._lock:
            entry = self._entries.get(fhir_base)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self._ttl:
                del self._entries[fhir_base]
                return None
            return entry[1]

    def put(self, config: SmartConfiguration) -> None:
        with self._lock:
            self._entries[config.fhir_base] = (self._clock(), config)

    def invalidate(self, fhir_base: str | None = None) -> None:
        with self._lock:
            if fhir_base is None:
                self._entries.clear()
            else:
                self._entries.pop(fhir_base, None)
