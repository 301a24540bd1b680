"""Incremental syncs of many patient connections of one EHR source in one run, each isolated (issue 14).

A Dagster run costs seconds before the first request, an incremental sync with nothing changed about a third of a
second: a batch run pays the first once for up to ``EHRSYNC_SYNC_BATCH_SIZE`` connections. Each connection keeps
what a run of its own gives it: its own ``sync_runs`` row (id :func:`batch_sync_run_id`, so the run-status sensor
finds it again), its own cursors and connection lock, its own outcome closed by ``finish_sync_run`` as soon as it
ends. One connection failing (any error) is recorded on its row and retried by ``engine.retries``; it neither stops
nor rolls back the others, except that one stopped by a source-wide throttle, or by its source being unreachable,
defers the later members at its source (``engine.batch_defer``), and one stopped by a landing disk too full stops
the batch (``engine.batch_stop``). The steps are the per-type assets' (``land_resource_type`` →
``upsert_resource_type`` per type, then ``sync_references``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from engine import runs
from engine.batch_defer import (
    SourceThrottle,
    SourceThrottles,
    source_key,
    source_origins,
    source_throttle,
    unopened_origin,
)
from engine.batch_stop import not_tried, short_error, stops_batch
from engine.connection_lock import hold_connection
from engine.connection_snapshots import ConnectionSnapshot, read_connection
from engine.connection_sync import PATIENT_TYPES, sync_references
from engine.environment import SyncEnvironment
from engine.errors import ConnectionNotFoundError
from engine.incremental import land_resource_type, upsert_resource_type
from engine.reports import TypeReport
from engine.request_stops import EVERY_REQUEST_WOULD_MEET, LANDING_DISK_FULL
from engine.run_holds import newest_row
from engine.run_outcome import CANCELED_PREFIX, RunTimes, finish_sync_run
from store import AppDatabase

__all__ = [
    "BatchOutcome",
    "ConnectionOutcome",
    "batch_sync_run_id",
    "close_batch_rows",
    "defer_connection",
    "open_batch_rows",
    "passed_over_earlier",
    "sync_batch",
    "sync_connection",
]

_log = logging.getLogger(__name__)
# Failures no later type of the member gets past: they end its sync (``_sync_types`` says why).
_STOPS_MEMBER = (*EVERY_REQUEST_WOULD_MEET, *LANDING_DISK_FULL)


def batch_sync_run_id(dagster_run_id: str, connection_id: str) -> str:
    """The ``sync_runs`` id of one connection's sync inside a batch run: derived, so a sensor can name it too."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ehrsync-batch:{dagster_run_id}:{connection_id}"))


@dataclass
class ConnectionOutcome:
    """One connection's sync in a batch: its row, its per-type reports, and why it failed (None: it did not)."""

    connection_id: str
    sync_run_id: str
    reports: dict[str, TypeReport] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None  # not synced at all (disconnected, disabled, gone since the batch was planned)
    duration_s: float = 0.0
    connection: ConnectionSnapshot | None = None
    references_read: bool = False  # the reference step ran (referenced types it did not report had nothing)
    throttle: SourceThrottle | None = None  # it stopped on a source-wide throttle, or was deferred by one
    deferred: str | None = None  # not attempted: its source was throttled (``engine.batch_defer``)
    stops_batch: str | None = None  # it met a landing disk too full: no later member is tried (``engine.batch_stop``)

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.skipped is None and self.deferred is None


@dataclass
class BatchOutcome:
    connections: list[ConnectionOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[ConnectionOutcome]:
        return [c for c in self.connections if c.error is not None]

    @property
    def deferred(self) -> list[ConnectionOutcome]:
        return [c for c in self.connections if c.deferred is not None]


def open_batch_rows(env: SyncEnvironment, dagster_run_id: str, connection_ids: Sequence[str]) -> None:
    """Create every member's row (queued) before the first sync: a run that dies part-way leaves open rows,
    which the run-status sensor closes as failed, so each member not reached is retried with backoff."""
    for connection_id in connection_ids:
        try:
            conn = read_connection(env.db, connection_id)
        except ConnectionNotFoundError:
            continue
        run_id = batch_sync_run_id(dagster_run_id, connection_id)
        if conn.syncable and not conn.is_bulk and runs.get(env.db, run_id) is None:
            runs.create_run(env.db, connection_id, "incremental", run_id=run_id, tenant_id=conn.tenant_id)


def sync_connection(
    env: SyncEnvironment,
    connection_id: str,
    dagster_run_id: str,
    types: Sequence[str] = PATIENT_TYPES,
) -> ConnectionOutcome:
    """Sync one member of a batch and close its row; never raises for the connection's own failures."""
    started = time.monotonic()
    outcome = ConnectionOutcome(connection_id, batch_sync_run_id(dagster_run_id, connection_id))
    try:
        conn = read_connection(env.db, connection_id)
    except ConnectionNotFoundError:
        return _skip(env, outcome, "connection not found")
    if why := _unsyncable(conn):
        return _skip(env, outcome, why)
    outcome.connection = conn
    try:
        with hold_connection(env, connection_id, outcome.sync_run_id):  # once for the whole connection
            _sync_types(env, outcome, types)
    except Exception as exc:  # the isolation boundary: any failure belongs to this connection only
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.throttle = source_throttle(exc, connection_id, origins=source_origins(env.db, connection_id))
        outcome.stops_batch = stops_batch(exc)
        _log.warning("batch sync of connection %s failed: %s", connection_id, type(exc).__name__)
    outcome.duration_s = time.monotonic() - started
    finish_sync_run(
        env.db, outcome.sync_run_id, connection_id, succeeded=outcome.succeeded, error=short_error(outcome.error)
    )
    if outcome.throttle is not None:  # its retry waits for the time the source named, not only for the backoff
        runs.hold_until(env.db, outcome.sync_run_id, outcome.throttle.until)
    return outcome


def defer_connection(
    env: SyncEnvironment, connection_id: str, dagster_run_id: str, throttle: SourceThrottle
) -> ConnectionOutcome:
    """Not attempted, its source throttled: the row closed ``deferred`` until the source's time, nothing else
    touched (cursors, landing, state); the scheduler asks for it again then (``engine.batch_defer``)."""
    outcome = ConnectionOutcome(connection_id, batch_sync_run_id(dagster_run_id, connection_id))
    outcome.throttle, outcome.deferred = throttle, throttle.reason()
    try:
        conn = read_connection(env.db, connection_id)
    except ConnectionNotFoundError:
        return _skip(env, outcome, "connection not found")
    if why := _unsyncable(conn):  # as sync_connection skips it: not deferred, it would not sync anyway
        outcome.throttle = outcome.deferred = None
        return _skip(env, outcome, why)
    outcome.connection = conn
    if runs.get(env.db, outcome.sync_run_id) is not None:
        runs.hold_until(env.db, outcome.sync_run_id, throttle.until, deferred=outcome.deferred)
    _log.info("batch sync of connection %s deferred until %s", connection_id, f"{throttle.until:%Y-%m-%dT%H:%M:%SZ}")
    return outcome


def _unsyncable(conn: ConnectionSnapshot) -> str:
    """Why a batch does not sync the connection ("": it does)."""
    if conn.is_bulk:
        return f"connection is {conn.status} (bulk)"
    if not conn.syncable:
        return conn.not_syncable_why or conn.status
    return ""


def _skip(env: SyncEnvironment, outcome: ConnectionOutcome, reason: str) -> ConnectionOutcome:
    """Not synced: a row opened for it is closed as a deliberate stop (not retried), since nothing was tried."""
    outcome.skipped = reason
    record = runs.get(env.db, outcome.sync_run_id)
    if record is not None and record.status == "queued":
        runs.fail(env.db, outcome.sync_run_id, f"{CANCELED_PREFIX}{reason}")
    return outcome


def close_batch_rows(
    db: AppDatabase,
    dagster_run_id: str,
    connection_ids: Sequence[str],
    *,
    succeeded: bool,
    error: str | None,
    times: RunTimes | None = None,
) -> int:
    """When a batch run ends: close its members' rows still open (the run died before closing them) with the
    run's verdict; rows each member's sync already closed keep their own outcome. Returns rows changed."""
    return sum(
        finish_sync_run(
            db, batch_sync_run_id(dagster_run_id, cid), cid, succeeded=succeeded, error=short_error(error), times=times
        )
        for cid in connection_ids
    )


def _sync_types(env: SyncEnvironment, outcome: ConnectionOutcome, types: Sequence[str]) -> None:
    """Each type as its two assets run it (a failed landing skips that type's upsert), then the references.

    A type that raises fails alone, as its step would in the member's own run: the types after it still sync (a
    type the EHR keeps failing would otherwise hold back the member's later types). What no type could get past
    stops the member: a grant no longer usable, an EHR that cannot be reached (no connection opened: refused,
    unresolved, a connect timeout), a throttle or spent quota longer than ehrsync waits (the server said it refuses
    every request until then: a 429 or 503 with a long Retry-After, eCW's per-practice budget), a landing disk too
    full, another process refreshing the grant past the refresh lock's 300 s (each type would wait them again)."""
    cid, run_id = outcome.connection_id, outcome.sync_run_id
    failures: list[str] = []
    for resource_type in types:
        try:
            report = land_resource_type(env, cid, resource_type, run_id)
            if report.error is None or report.incomplete:  # an incomplete search: the upsert stores what arrived
                report = upsert_resource_type(env, cid, resource_type, run_id)
        except _STOPS_MEMBER:
            raise
        except Exception as exc:  # this type's failure only (its mark is where it was), unless the EHR's host is
            if unopened_origin(exc) is not None:  # unreachable (a connect timeout): every later type would fail too
                raise
            report = TypeReport(resource_type, error=f"{type(exc).__name__}: {exc}")
            _log.warning("batch sync of %s for connection %s failed: %s", resource_type, cid, type(exc).__name__)
        outcome.reports[resource_type] = report
        if report.error is not None:
            failures.append(f"{resource_type}: {report.error}")
    referenced = sync_references(env, cid, run_id)
    outcome.references_read = True
    for resource_type, report in referenced.items():
        outcome.reports[resource_type] = report
        if report.error is not None:
            failures.append(f"{resource_type}: {report.error}")
    if failures:
        outcome.error = "; ".join(failures)


def passed_over_earlier(
    db: AppDatabase,
    earlier_runs: Sequence[str],
    connection_ids: Sequence[str],
    *,
    completed: bool,
    held_at: datetime | None = None,
) -> set[str]:
    """The members a batch re-execution does not sync, by each one's newest sync in ``earlier_runs`` (the Dagster
    runs it carries on, newest first). ``completed`` (a re-execution from failure): those it completed; the batch
    is one op, so Dagster runs it whole again, and syncing them again sends their requests twice to an EHR that may
    be throttling the source. ``held_at`` (Dagster's automatic run retry, launched the moment the run failed, by
    no operator): those their source said not to ask before a later time (a throttle, a spent quota, unreachable:
    ``not_before``); the scheduler asks for them then, a retry would only send them into the throttle again."""
    skipped: set[str] = set()
    for connection_id in connection_ids:
        newest = newest_row(db, [batch_sync_run_id(rid, connection_id) for rid in earlier_runs])
        if newest is None:
            continue
        done = completed and newest.status == "completed"
        held = held_at is not None and newest.not_before is not None and newest.not_before > held_at
        if done or held:
            skipped.add(connection_id)
    return skipped


def sync_batch(
    env: SyncEnvironment,
    connection_ids: Sequence[str],
    dagster_run_id: str,
    on_done: Callable[[ConnectionOutcome], None] | None = None,
    passed_over: Collection[str] = (),
) -> BatchOutcome:
    """Sync the members one after another (the batch's concurrency toward its EHR is one request at a time). Once
    one stops on a source-wide throttle or finds its source unreachable, the later members at that source are
    deferred, not tried; once one meets a landing disk too full, no later member is tried. ``passed_over``
    (:func:`passed_over_earlier`: a re-execution) are not synced and get no row."""
    members = [cid for cid in connection_ids if cid not in passed_over]
    open_batch_rows(env, dagster_run_id, members)
    batch = BatchOutcome()
    throttles = SourceThrottles()
    stopped: tuple[str, str] | None = None  # the member that met a full landing disk, and why
    for connection_id in members:
        key = source_key(env.db, connection_id)
        if stopped is not None:  # every later member would land on the same full disk
            outcome = ConnectionOutcome(connection_id, batch_sync_run_id(dagster_run_id, connection_id))
            outcome.error = not_tried(env.db, outcome.sync_run_id, connection_id, *stopped)
        elif (held := throttles.holding(key)) is not None:
            outcome = defer_connection(env, connection_id, dagster_run_id, held)
        else:
            outcome = sync_connection(env, connection_id, dagster_run_id)
            throttles.note(key, outcome.throttle)
            stopped = (connection_id, outcome.stops_batch) if outcome.stops_batch else None
        batch.connections.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return batch
