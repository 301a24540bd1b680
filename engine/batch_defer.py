"""Deferring a batch's members whose source said it refuses requests for now (vendors.md §4, BDX-10).

A member whose sync stops on a throttle longer than ehrsync waits (``RateLimitedError``: a 429 or 503 whose
Retry-After is past the 15 min clamp, or whose retries ran out; the EHR's quota spent until a later reset,
``QuotaExhaustedError``; the vendor call budget without a free call, ``CallBudgetBusyError``) met a limit of the
source, not of its own grant: the server counts the app's calls per practice, tenant or base URL. Each later member
of the batch at the same source (same provider and FHIR base) would only send one more refused request and record
one more failure, so it is not attempted: its cursors and state stay as they were, its row is closed
``deferred`` (not failed: no failure streak, no retry backoff) naming the throttle, with ``not_before`` the time
the source said to come back, and the scheduler asks for it again then (``engine.planning``). A per-connection
failure (a grant needing re-authorization, a type the server refuses) defers nobody; members at another source go
on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from connectors.errors import RateLimitedError
from store import AppDatabase
from store.models import Connection

__all__ = ["DEFAULT_WAIT_S", "SourceKey", "SourceThrottle", "SourceThrottles", "source_key", "source_throttle"]

#: How long a throttle that named no time (a 429 without Retry-After whose retries ran out) holds its source.
DEFAULT_WAIT_S = 300.0

SourceKey = tuple[str, str]  # (provider id, FHIR base without its trailing slash)


@dataclass(frozen=True)
class SourceThrottle:
    """A source-wide throttle: which kind (log-safe, no URL), which member met it, and until when it holds."""

    kind: str
    connection_id: str
    until: datetime

    def reason(self) -> str:
        return (
            f"deferred: the source is throttled ({self.kind}, met by connection {self.connection_id}); "
            f"not tried before {self.until:%Y-%m-%dT%H:%M:%SZ}"
        )


def source_throttle(exc: BaseException, connection_id: str, now: datetime | None = None) -> SourceThrottle | None:
    """The throttle ``exc`` says holds for its whole source, or None (a failure of this connection only)."""
    if not isinstance(exc, RateLimitedError):
        return None
    wait = exc.retry_after if exc.retry_after is not None and exc.retry_after > 0 else DEFAULT_WAIT_S
    at = now or datetime.now(UTC)
    return SourceThrottle(f"{exc.code}, HTTP {exc.status}", connection_id, at + timedelta(seconds=wait))


def source_key(db: AppDatabase, connection_id: str) -> SourceKey | None:
    """Where a throttle applies: the provider and the FHIR base (eCW counts calls per practice base URL; a quota
    is the app's at the server). None: no such connection."""
    with db.session() as session:
        row = session.get(Connection, connection_id)
        return None if row is None else (row.provider_id, (row.fhir_base or "").rstrip("/"))


@dataclass
class SourceThrottles:
    """The throttles one batch run has met, by source; each holds until the latest time its source named."""

    held: dict[SourceKey, SourceThrottle] = field(default_factory=dict)

    def note(self, key: SourceKey | None, throttle: SourceThrottle | None) -> None:
        if key is None or throttle is None:
            return
        known = self.held.get(key)
        if known is None or throttle.until > known.until:
            self.held[key] = throttle

    def holding(self, key: SourceKey | None, now: datetime | None = None) -> SourceThrottle | None:
        """The throttle still holding ``key`` (None: none met, or its time has passed during the run)."""
        throttle = None if key is None else self.held.get(key)
        return throttle if throttle is not None and throttle.until > (now or datetime.now(UTC)) else None
