"""Deferring a batch's members whose source said it refuses requests for now (vendors.md §4, BDX-10).

A member whose sync stops on a throttle longer than ehrsync waits (``RateLimitedError``: a 429 or 503 whose
Retry-After is past the 15 min clamp, or whose retries ran out; the EHR's quota spent until a later reset,
``QuotaExhaustedError``; the vendor call budget without a free call, ``CallBudgetBusyError``; the token endpoint's
429 or 503 with Retry-After on the member's refresh, ``engine.token_throttle``) met a limit of the
source, not of its own grant: the server counts the app's calls per practice, tenant or base URL. Each later member
of the batch at the same source (same provider and FHIR base) would only send one more refused request and record
one more failure, so it is not attempted: its cursors and state stay as they were, its row is closed
``deferred`` (not failed: no failure streak, no retry backoff) naming the throttle, with ``not_before`` the time
the source said to come back, and the scheduler asks for it again then (``engine.planning``). A per-connection
failure (a grant needing re-authorization, a type the server refuses) defers nobody; members at another source go
on.

An unreachable source is deferred alike: a member whose sync stopped because no connection could be opened to its
source (connection refused, a host name that does not resolve, a connect timeout, a failed TLS handshake, which
httpx raises as ``ConnectError``: ``EhrUnreachableError``, or a ``TransportError`` from such a failure) at the
source's FHIR base or token endpoint would be followed by every later member failing the same way with nothing sent
or received. Those wait ``DEFAULT_WAIT_S`` (the source named no time). A failure after the server answered or
accepted the connection (a dropped or timed-out read, a 5xx) may be one member's (a slow search of one patient's
data) and defers nobody; so does one at another host (an attachment's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from connectors.errors import EhrSyncError, RateLimitedError
from connectors.transport.retrying import origin_of
from store import AppDatabase
from store.models import Connection

__all__ = [
    "DEFAULT_WAIT_S",
    "MAX_WAIT_S",
    "SourceKey",
    "SourceThrottle",
    "SourceThrottles",
    "rate_limit_in",
    "source_key",
    "source_origins",
    "source_throttle",
    "throttle_end",
    "unopened_origin",
]

#: How long a throttle that named no time (a 429 without Retry-After whose retries ran out), or an unreachable
#: source, holds its source.
DEFAULT_WAIT_S = 300.0
#: The longest a source is held, whatever it named: a Retry-After or quota reset of years (a server's mistake, or
#: 10^14 s, past what a datetime holds) would park the source's connections for good or crash the batch. A source
#: still refusing a day later says so again.
MAX_WAIT_S = 86_400.0
_CAUSE_DEPTH = 8  # ehrsync error → httpx → httpcore → OSError: bounded in case a chain loops

SourceKey = tuple[str, str]  # (provider id, FHIR base without its trailing slash)


@dataclass(frozen=True)
class SourceThrottle:
    """A source-wide throttle: which kind (log-safe, no URL), which member met it, and until when it holds."""

    kind: str
    connection_id: str
    until: datetime
    state: str = "throttled"  # or "unreachable": no connection could be opened to it

    def reason(self) -> str:
        return (
            f"deferred: the source is {self.state} ({self.kind}, met by connection {self.connection_id}); "
            f"not tried before {self.until:%Y-%m-%dT%H:%M:%SZ}"
        )


def source_throttle(
    exc: BaseException, connection_id: str, now: datetime | None = None, origins: frozenset[str] = frozenset()
) -> SourceThrottle | None:
    """What ``exc`` says holds for its whole source (a throttle; no connection to one of ``origins``, the source's
    FHIR base and token endpoint: ``source_origins``), or None (a failure of this connection only)."""
    at = now or datetime.now(UTC)
    if isinstance(exc, RateLimitedError):
        return SourceThrottle(f"{exc.code}, HTTP {exc.status}", connection_id, throttle_end(at, exc.retry_after))
    origin = unopened_origin(exc)
    if origin is None or origin not in origins:
        return None
    code = exc.code if isinstance(exc, EhrSyncError) else "transport_error"
    kind = f"{code}: no connection could be opened to {origin}"
    return SourceThrottle(kind, connection_id, at + timedelta(seconds=DEFAULT_WAIT_S), state="unreachable")


def throttle_end(at: datetime, retry_after: float | None) -> datetime:
    """When a throttle met at ``at`` that named ``retry_after`` seconds ends: ``DEFAULT_WAIT_S`` when it named none,
    at most ``MAX_WAIT_S`` (a longer time is a server's mistake, and past a datetime's range would raise)."""
    wait = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_WAIT_S
    return at + timedelta(seconds=min(wait, MAX_WAIT_S))


def rate_limit_in(exc: BaseException) -> RateLimitedError | None:
    """The throttle ``exc`` was raised from (``raise ... from``), when one was: a Bulk file's 429 re-typed as a
    ``BulkExportError`` keeps the ``RateLimitedError`` with its Retry-After as its cause."""
    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None or isinstance(cause, RateLimitedError):
            return cause
        cause = cause.__cause__
    return None


def unopened_origin(exc: BaseException) -> str | None:
    """The origin no connection could be opened to (refused, unresolved, connect timeout) when that caused ``exc``,
    else None: nothing was sent, so the host, not this request, is what failed."""
    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None:
            return None
        if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
            try:
                return origin_of(cause.request.url)
            except RuntimeError:  # raised without its request: the host is unknown
                return None
        cause = cause.__cause__ or cause.__context__
    return None


def source_origins(db: AppDatabase, connection_id: str) -> frozenset[str]:
    """The origins every member of the connection's source calls: its FHIR base's and its token endpoint's."""
    with db.session() as session:
        row = session.get(Connection, connection_id)
        urls = [] if row is None else [u for u in (row.fhir_base, row.token_endpoint) if u]
    return frozenset(origin_of(httpx.URL(u)) for u in urls)


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
