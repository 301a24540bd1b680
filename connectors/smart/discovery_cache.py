"""Per-issuer cache of discovered SMART configurations (SAL-01)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from connectors.recent import RecentCache

if TYPE_CHECKING:
    from connectors.smart.configuration import SmartConfiguration

__all__ = ["DISCOVERY_CACHE_MAX_ENTRIES", "DiscoveryCache"]

#: Most FHIR bases whose configuration a DiscoveryCache holds. A multi-tenant auth service signs users in to a few
#: hundred bases at most within the TTL (an Epic customer directory lists hundreds); past it the least recently used
#: is dropped and discovered again when needed (one GET, as after the TTL). Each configuration keeps the document
#: it came from, so without the cap a long-lived process meeting many issuers kept every one for good.
DISCOVERY_CACHE_MAX_ENTRIES = 256


class DiscoveryCache:
    """Per-issuer cache of discovered configurations (SAL-01: TTL 1 h by default), at most ``max_entries``
    (:data:`DISCOVERY_CACHE_MAX_ENTRIES`; least recently used dropped, expired ones dropped whenever one is stored);
    thread-safe."""

    def __init__(
        self,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DISCOVERY_CACHE_MAX_ENTRIES,
    ) -> None:
        self._entries: RecentCache[SmartConfiguration] = RecentCache(ttl_seconds, max_entries, clock)

    def __len__(self) -> int:
        """How many configurations are held now."""
        return len(self._entries)

    def get(self, fhir_base: str) -> SmartConfiguration | None:
        return self._entries.get(fhir_base)

    def put(self, config: SmartConfiguration) -> None:
        self._entries.put(config.fhir_base, config)

    def invalidate(self, fhir_base: str | None = None) -> None:
        if fhir_base is None:
            self._entries.clear()
        else:
            self._entries.pop(fhir_base)
