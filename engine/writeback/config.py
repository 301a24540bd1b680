"""How the write-back behaves: the service-wide switch and the retry bounds, parsed once per process."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WritebackConfig"]


@dataclass(frozen=True)
class WritebackConfig:
    """``service_write_enabled`` is ``SMART_ENABLE_WRITE``; the rest bounds retries (draft-note §5: honour
    ``Retry-After``, else backoff capped at 10 min; at most 8 tries) and says when content goes as a ``Binary`` first
    (DWB-18, only where the server allows it)."""

    service_write_enabled: bool = False
    max_attempts: int = 8
    backoff_base_s: float = 30.0
    backoff_cap_s: float = 600.0
    #: the longest ``Retry-After`` (or quota reset) honoured: a daily quota resets within a day; a server asking for
    #: longer is waited a day, then asked again
    retry_after_cap_s: float = 86_400.0
    inline_max_bytes: int = 1_000_000
    #: Binaries a note may POST in all (a lost answer, a 202 job gone or refused): each may be left in the EHR
    binary_posts_max: int = 3
    #: a note left in ``sending`` this long (its run died) is resumed by the sensor; a live run refreshes its note
    #: every quarter of this (``heartbeat``), so a slow POST is never taken for a dead one
    stalled_after_s: float = 600.0
    #: a create answered 202 with a status endpoint (FHIR async pattern): polled at most this many times, within
    #: this many seconds in all, ``accepted_poll_s`` apart at least (the server's Retry-After may ask longer, not
    #: shorter: a ``Retry-After: 0`` would spend every poll back to back)
    accepted_polls: int = 10
    accepted_wait_s: float = 60.0
    accepted_poll_s: float = 2.0
    #: an identifier search (``lookup``: up to 3 passes of up to 20 pages) ends within this many seconds in all, the
    #: request deadline of each page and the transport's waits included, and the patient/type/date search made after
    #: it (``fallback``) within what it left; past it the note stays ``unknown``
    lookup_wait_s: float = 300.0

    def backoff_s(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt: the server's ``Retry-After`` when it gave one (honoured up to
        ``retry_after_cap_s``: the note waits in ``pending``, nothing is held meanwhile), else doubling up to
        ``backoff_cap_s``."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.retry_after_cap_s)
        return float(min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_cap_s))
