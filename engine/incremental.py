"""Incremental REST sync of one resource type of one patient connection: land (search → Parquet), then upsert.

Landing and upsert are two steps (two Dagster assets) joined by the *pending* landing in ``sync_cursors``.
The mark is the server's clock at the first page (BDX-27; never later than this host's clock: ``landing_sink``),
stored only when the upsert commits, and the next search asks for ``_lastUpdated=gt(mark - overlap)`` (BDX-28):
duplicates are absorbed by idempotent upserts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.budgets import step_budget
from connectors.errors import FhirForbiddenError, SearchLinkExpiredError
from connectors.fhir import FhirClient
from connectors.fhir.capability import SEARCH_PARAMS
from connectors.transport.issues import codes_said
from engine import cursors
from engine.attachments import ATTACHMENT_TYPES, store_attachments
from engine.checkpoints import checkpoint
from engine.connection_info import ConnectionInfo, load_connection
from engine.connection_sync import rest_types
from engine.environment import SyncEnvironment
from engine.errors import NothingLandedError
from engine.handoff import AttachmentLink, LandingHandoff, LandingSummary
from engine.landing_retention import drop_merged
from engine.landing_sink import Landing, LandingSink
from engine.reports import NOT_SUPPORTED, SCOPE_NOT_GRANTED, TypeReport
from engine.runs import continue_run, ensure_run, note_full, record_type_counts
from engine.search_plans import grant_narrows, plan_label, scope_allows, search_plans
from engine.search_recovery import ENDLESS_PREFIX, search_plan
from warehouse import LandingWriter
from warehouse.attachments import AttachmentRef as StoredAttachment

_log = logging.getLogger(__name__)
MAX_LINK_RESTARTS = 3
FORBIDDEN_PREFIX = "refused (403):"
#: A type the grant covers only in part (Epic categories): its mark never moves, so widening the grant later finds
#: the other searches' older data (their history before a moved mark would never be asked for).
PARTIAL_GRANT_PREFIX = "the grant covers only part of"


def land_resource_type(
    env: SyncEnvironment,
    connection_id: str,
    resource_type: str,
    run_id: str,
    *,
    full: bool = False,
    earlier_runs: Sequence[str] = (),
    full_types: Sequence[str] | None = None,
) -> TypeReport:
    """Search the type's changes since the stored mark (everything when ``full``), land them, record as pending.

    Returns a report (a type the grant does not cover: ``skipped_reason="scope_not_granted"``). Raises the
    connectors' typed errors when the fetch fails: nothing recorded, the mark untouched (forgotten in a full run:
    ``_open_run``, ``earlier_runs``, ``full_types``; one forgotten while the search ran stays so:
    ``cursors.set_pending``)."""
    started = time.monotonic()
    conn = load_connection(env.db, connection_id)
    stored = _open_run(env, conn, run_id, full, earlier_runs, full_types, resource_type)
    since = stored - env.overlap if stored is not None else None
    allowed = scope_allows(conn, resource_type)
    plans = search_plans(conn, resource_type, since, env.page_size) if allowed else []
    if not plans:
        # Recorded like a landing so the upsert step completes it uniformly; the mark stays where it was.
        reason = NOT_SUPPORTED if allowed and not grant_narrows(conn, resource_type) else SCOPE_NOT_GRANTED
        report = TypeReport(resource_type, skipped_reason=reason)
        _log.info("skipping %s for %s: %s", resource_type, connection_id, report.skipped_reason)
        skipped = LandingHandoff(summary=LandingSummary.of(report))
        cursors.set_pending(env.db, connection_id, cursors.REST_STREAM, resource_type, run_id, None, skipped)
        return report
    links: list[dict[str, Any]] = []
    _carry_full(env, conn, resource_type, run_id, stored is None and not full)
    with env.fhir_client(conn) as client, step_budget(f"landing {resource_type}", env.step_budget_s):
        if since is not None:  # only an incremental search needs to know whether _lastUpdated works
            plans = _declared_plans(env, conn, client, resource_type, run_id, since)
        landing = _land_with_restarts(env, _Search(conn, client, resource_type, run_id, plans, since))
        report = landing.report
        missed = 0
        if resource_type in ATTACHMENT_TYPES and landing.attachments:
            outcome = store_attachments(env, conn, client, landing.attachments)
            report.attachments, report.attachments_failed = outcome.stored, outcome.failed
            links, missed = outcome.links, outcome.retryable
    if report.incomplete or missed:
        _hold_mark(env, connection_id, resource_type, landing, full=since is None, missed_attachments=missed)
    elif grant_narrows(conn, resource_type):  # the mark stands for every search of the type: never move it on part
        landing.mark = None
        report.warnings.append(f"{PARTIAL_GRANT_PREFIX} {resource_type}; its mark stays where it was")
    report.high_water_mark = landing.mark
    report.duration_s = time.monotonic() - started
    handoff = LandingHandoff(
        files=tuple(landing.files),
        summary=LandingSummary.of(report),
        references=tuple(sorted(landing.references)),
        attachments=tuple(AttachmentLink.from_json(link) for link in links),
    )
    cursors.set_pending(
        env.db, connection_id, cursors.REST_STREAM, resource_type, run_id, landing.mark, handoff, searched_after=stored
    )
    checkpoint("rest.landed")
    return report


def _declared_plans(
    env: SyncEnvironment, conn: ConnectionInfo, client: FhirClient, resource_type: str, run_id: str, since: datetime
) -> list[dict[str, str]]:
    """The type's searches since ``since``, with ``_lastUpdated`` where the server's statement declares it for the
    type (a slip in another type's entry is not this search's: ``SEARCH_PARAMS.of``)."""
    statement = env.capabilities(conn, client, run_id, reads=SEARCH_PARAMS.of(resource_type))
    return search_plans(conn, resource_type, since, env.page_size, statement)


def _open_run(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    run_id: str,
    full: bool,
    earlier: Sequence[str],
    full_types: Sequence[str] | None,
    resource_type: str,
) -> datetime | None:
    """Open the run's row and return the type's stored mark (None in a full run). A full run's first step forgets
    the marks of the types it was asked for (``full_types``; None: every type; ``cursors.begin_full``, not again in
    a re-execution of ``earlier`` runs), so a full sync that fails part-way is still a full sync when retried."""
    ensure_run(env.db, conn.id, run_id, "full" if full else "incremental", tenant_id=conn.tenant_id)
    if full:
        cursors.begin_full(env.db, conn.id, run_id, rest_types(full_types), earlier)
        return None
    return cursors.get_mark(env.db, conn.id, cursors.REST_STREAM, resource_type)


def _carry_full(env: SyncEnvironment, conn: ConnectionInfo, resource_type: str, run_id: str, whole: bool) -> None:
    """An incremental run searching a type whole that a full run still owes (its retry, the next scheduled or batch
    run) does the full run's work: its row says ``full`` (and its reference step re-reads what is queued). A type
    the grant covers in part is searched whole every time (its mark never moves): that owes nothing."""
    if whole and not grant_narrows(conn, resource_type) and cursors.owes_full(env.db, conn.id, resource_type):
        note_full(env.db, run_id)


def _hold_mark(
    env: SyncEnvironment,
    connection_id: str,
    resource_type: str,
    landing: Landing,
    *,
    full: bool,
    missed_attachments: int,
) -> None:
    """Keep the next run asking for what this one did not receive (unseen matches, attachments not stored).

    They may be older than this run's mark, so it is never stored. An incremental run keeps the stored mark;
    a full run (or a type without a mark) clears it, as an older mark would skip them: the next run searches
    the whole type. An unrecovered search also fails the type (``search_incomplete``), as does a search the
    server refused with 403 while the type's other searches landed (``search_forbidden``), and one given up on an
    endless cursor of empty pages (``search_endless_paging``): data was not received.
    """
    report = landing.report
    landing.mark = None
    if full:
        cursors.clear_mark(env.db, connection_id, cursors.REST_STREAM, resource_type)
    kept = "the next run searches the whole type again" if full else "the stored mark is kept for the next run"
    if missed_attachments:
        report.warnings.append(f"{missed_attachments} attachment(s) not stored; {kept}")
    refused = [w.removeprefix(FORBIDDEN_PREFIX).strip() for w in report.warnings if w.startswith(FORBIDDEN_PREFIX)]
    endless = [w.removeprefix(ENDLESS_PREFIX).strip() for w in report.warnings if w.startswith(ENDLESS_PREFIX)]
    if refused:
        report.error = f"search_forbidden: the server refused {'; '.join(refused)}; what arrived is stored; {kept}"
    elif endless:
        report.error = f"search_endless_paging: {endless[0]}; what arrived is stored; {kept}"
    elif report.incomplete:
        report.error = f"search_incomplete: the {resource_type} search stopped early and was not recovered; {kept}"
    _log.warning("%s of %s not fully received; %s", resource_type, connection_id, kept)


@dataclass(frozen=True)
class _Search:
    """The searches of one type in one run, landed together into one file."""

    conn: ConnectionInfo
    client: FhirClient
    resource_type: str
    run_id: str
    plans: list[dict[str, str]]
    since: datetime | None


def _land_with_restarts(env: SyncEnvironment, search: _Search) -> Landing:
    """Land all plans into one file; an expired ``next`` link discards the partial file and restarts (BDX-29)."""
    for attempt in range(1, MAX_LINK_RESTARTS + 1):
        try:
            return _land_once(env, search)
        except SearchLinkExpiredError:
            if attempt == MAX_LINK_RESTARTS:
                raise
            _log.warning(
                "paging link expired for %s/%s; restarting from the mark", search.conn.id, search.resource_type
            )
    raise AssertionError("unreachable")


def _land_once(env: SyncEnvironment, search: _Search) -> Landing:
    conn, rtype = search.conn, search.resource_type
    landing = Landing(TypeReport(rtype))
    report = landing.report
    source = f"{conn.fhir_base.rstrip('/')}/{rtype}"
    windows = search.since if any("_lastUpdated" in plan for plan in search.plans) else None
    with ExitStack() as stack:  # closes (or, on an error, aborts) the file if one was opened

        def open_writer() -> LandingWriter:
            # transaction_time: the first page's server time, which lifts tombstones (_sql.newer_predicate)
            answered = landing.answered
            writer = env.zone.writer(conn.id, rtype, search.run_id, source, conn.tenant_id, answered, seq="rest")
            return stack.enter_context(writer)

        sink = LandingSink(landing, open_writer, conn.fhir_base, rtype)
        for plan in search.plans:
            if not _search_plan(search, plan, sink, windows):
                report.incomplete = True
    if sink.writer is None:
        return landing  # nothing received: no file (report.files stays 0)
    landed = sink.writer.result
    report.quarantined = landed.quarantined
    report.bytes = landed.bytes
    report.files = 1
    landing.files.append(landed)
    return landing


def _search_plan(search: _Search, plan: dict[str, str], sink: LandingSink, windows: datetime | None) -> bool:
    """One plan of the type; a 403 refuses that search only (an Epic category API not on the app, vendors.md
    §2): the other plans' data still lands, and the type is incomplete, so its mark is held (``_hold_mark``)."""
    try:
        return search_plan(search.client, search.resource_type, plan, sink, windows)
    except FhirForbiddenError as exc:
        label = plan_label(search.resource_type, plan)
        said = codes_said(exc.operation_outcome)  # cleaned, capped: this warning is logged
        issues = f" (issues: {said})" if said else ""
        sink.warn(f"{FORBIDDEN_PREFIX} {label}{issues}, an API not on the app's registration at the EHR")
        _log.warning("%s search of %s refused with 403", label, search.conn.id)
        return False


def upsert_resource_type(
    env: SyncEnvironment, connection_id: str, resource_type: str, run_id: str, *, earlier_runs: Sequence[str] = ()
) -> TypeReport:
    """Upsert the type's pending landing of ``run_id`` (or of ``earlier_runs``: the runs a Dagster re-execution
    carries on, whose landing steps it does not run again), then advance the mark in the completion transaction.

    Safe to repeat: a second call after success returns an empty report (the work is done); a call after a
    crash between upsert and commit upserts the same file again, which changes nothing (BDX-24).
    """
    started = time.monotonic()
    pending = cursors.get_pending(env.db, connection_id, cursors.REST_STREAM, resource_type)
    ours = (run_id, *earlier_runs)
    if pending is None or pending.run_id not in ours:
        if cursors.last_run_id(env.db, connection_id, cursors.REST_STREAM, resource_type) in ours:
            return TypeReport(resource_type)  # already upserted by this run: nothing left to do
        raise NothingLandedError(f"no landing of run {run_id} waits for {connection_id}/{resource_type}")
    continue_run(env.db, connection_id, run_id, ours)  # a re-execution's own row, for its counts and outcome
    handoff = pending.handoff
    report = handoff.summary.report(resource_type)
    landed = [f for f in handoff.files if f.rows or f.quarantined]  # an empty page file has nothing to merge
    links = handoff.attachments
    if landed or links:  # nothing changed: do not even open the warehouse (most incremental types, most days)
        with env.warehouse() as wh, wh.batch():
            for file in landed:
                stats = wh.upsert(file)
                report.created += stats.inserted
                report.updated += stats.updated
                report.unchanged += stats.unchanged
            for link in links:
                wh.record_attachment(connection_id, link.url, _attachment_ref(env, link))
    checkpoint("rest.upserted")
    report.duration_s = time.monotonic() - started + handoff.summary.duration_s
    # A read-modify-write of shared rows: take the write lock before the first read (SQLite BEGIN IMMEDIATE),
    # or a writer committing in between fails this commit at once with "database is locked". The mark stored is
    # the landing's as it stands under the lock (forgotten meanwhile: none; ``cursors.complete_landing``).
    with env.db.locked_session() as session:
        report.high_water_mark = cursors.complete_landing(session, connection_id, resource_type, run_id, pending.run_id)
        cursors.add_references(session, connection_id, list(handoff.references))
        record_type_counts(session, run_id, resource_type, report.as_metadata())
        session.commit()
    checkpoint("rest.cursor_saved")
    drop_merged(env.landing_retention_days, handoff.files)  # EHRSYNC_LANDING_RETENTION_DAYS=0: gone once merged
    return report


def _attachment_ref(env: SyncEnvironment, link: AttachmentLink) -> StoredAttachment:
    return StoredAttachment(link.sha256, link.size, link.content_type, env.attachments.path_for(link.sha256))
