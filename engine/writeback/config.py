"""How the write-back behaves: the service-wide switch and the retry bounds, parsed once per process."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WritebackConfig"]


@dataclass(frozen=True)
class WritebackConfig:
    """``service_write_enabled`` is ``SMART_ENABLE_WRITE``; the rest bounds retries (draft-note §5: cap 10 min,
    at most 8 tries) and says when content goes as a ``Binary`` first (DWB-18, only where the server allows it)."""

    service_write_enabled: bool = False
    max_attempts: int = 8
    backoff_base_s: float = 30.0
    backoff_cap_s: float = 600.0
    inline_max_bytes: int = 1_000_000
    #: a note left in ``sending`` this long (its run died) is resumed by the sensor; a live run refreshes its note
    #: every quarter of this (``heartbeat``), so a slow POST is never taken for a dead one
    stalled_after_s: float = 600.0

    def backoff_s(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt: the server's ``Retry-After`` when it gave one, else doubling."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.backoff_cap_s)
        return float(min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_cap_s))
