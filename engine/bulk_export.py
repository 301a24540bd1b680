"""Bulk ``$export`` for backend and group connections: kick-off or resume, download, land, upsert, advance.

Every step is recorded before the next one starts (``bulk_state``), so a run killed anywhere resumes the
same export: polling the saved status URL, re-fetching only files not yet ``done``. The export's
``transactionTime`` becomes the next ``_since`` only in the commit that marks the job complete (BDX-14); an
expired file (404/410) re-runs the export from the same ``_since`` (BDX-19).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from connectors.bulk import WHOLE_EXPORT, BulkClient, ExportLevel
from connectors.errors import (
    BulkExportBusyError,
    BulkExportError,
    BulkExportIncompleteError,
    EhrSyncError,
)
from connectors.fhir.capability import SYSTEM_EXPORT
from engine import bulk_members, bulk_state, cursors, runs
from engine.batch_defer import rate_limit_in, throttle_end
from engine.bulk_files import ExportExpiredError, process_files
from engine.bulk_job_ends import cancel_quietly
from engine.bulk_jobs import BulkProgress, await_manifest, kickoff, next_since
from engine.bulk_level import export_level, require_declared_export
from engine.bulk_members import ExportSpec, FileHandler, OnComplete
from engine.bulk_state import JobView
from engine.bulk_switch import bulk_refusal
from engine.checkpoints import checkpoint
from engine.connection_info import ConnectionInfo, load_connection
from engine.environment import SyncEnvironment
from engine.models import utcnow
from engine.reports import BulkReport
from engine.run_holds import note_hold, note_source_throttle
from warehouse.errors import WarehouseError

_log = logging.getLogger(__name__)


def run_bulk_export(
    env: SyncEnvironment,
    connection_id: str,
    run_id: str,
    *,
    types: list[str] | None = None,
    progress: BulkProgress | None = None,
) -> BulkReport:
    """Run (or resume) the connection's export of ``types`` (all when ``None``) and land it.

    Returns the report: ``completed``, ``partial`` (error files report failed types: ``incomplete_types``, ``_since``
    held) or ``failed`` (``error``; its job and file state kept, so the next call resumes it). Only
    ConnectionNotFoundError / ConnectionNotSyncableError raise (missing, or not Bulk). A tenant whose switch is off
    (``engine.bulk_switch``: nothing sent) or a server declaring no system-level export is a failed report.
    """
    started = time.monotonic()
    conn = load_connection(env.db, connection_id)
    level, group_id = export_level(conn)
    type_list = sorted(set(types)) if types else []
    spec = ExportSpec(cursors.bulk_stream(level, group_id), cursors.bulk_type_key(type_list), type_list)
    report = BulkReport(run_id=run_id, connection_id=connection_id)
    if not _open_run(env, conn, report, started):  # the tenant's switch said no: recorded, nothing sent
        return report
    client = env.bulk_client(conn)

    def run(spec: ExportSpec, into: BulkReport, on_files: FileHandler | None, done: OnComplete | None) -> JobView:
        job = _run(env, conn, client, run_id, level, group_id, spec, into, progress, on_files, done)
        cancel_quietly(client, job)
        return job

    try:
        if level == "system":
            with env.fhir_client(conn) as fhir:
                require_declared_export(conn, level, env.capabilities(conn, fhir, run_id, reads=SYSTEM_EXPORT))
        main = run(spec, report, None, None)
        if report.incomplete_types:
            raise _incomplete(report.incomplete_types)
        # BDX-15: only after an incremental export; a first (full) export already has every member's data
        if group_id is not None and env.bulk_membership_check and main.since_used is not None:
            bulk_members.check_membership(env, conn, client, run_id, group_id, type_list, report, run)
        if report.incomplete_types:
            raise _incomplete(report.incomplete_types)
        report.status = "completed"
        runs.complete(env.db, run_id, _run_counts(report))
    except BulkExportIncompleteError as exc:
        report.status = "partial"  # what arrived is merged; the mark is held so the next run asks again
        report.error = f"{exc.code}: {exc}"
        _log.warning("bulk export of %s incomplete: %s", connection_id, report.error)
        runs.fail(env.db, run_id, report.error, _run_counts(report))
    except (EhrSyncError, WarehouseError, OSError) as exc:
        report.status = "failed"
        code = getattr(exc, "code", type(exc).__name__)
        report.error = f"{code}: {exc}"
        _log.warning("bulk export of %s failed: %s: %s", connection_id, code, exc)
        runs.fail(env.db, run_id, report.error, _run_counts(report))
        _note_retry_after(env, run_id, connection_id, exc)
    finally:
        client.close()
        report.duration_s = time.monotonic() - started
    return report


def _open_run(env: SyncEnvironment, conn: ConnectionInfo, report: BulkReport, started: float) -> bool:
    """Open the run's row; False when the tenant's switch says no (``engine.bulk_switch``). The run then fails
    naming it and notes no hold (turned on, the next run may go; until then the scheduler retries with its
    backoff). An export this connection kicked off keeps its job and file state, resumed by the next allowed run;
    its mark is untouched."""
    runs.ensure_run(env.db, conn.id, report.run_id, "bulk", tenant_id=conn.tenant_id)
    refusal = bulk_refusal(env.db, conn.id, conn.tenant_id)
    if refusal is None:
        return True
    report.status, report.error = "failed", f"{refusal.code}: {refusal}"
    _log.warning("bulk export of %s refused: %s", conn.id, report.error)
    runs.fail(env.db, report.run_id, report.error, _run_counts(report))
    report.duration_s = time.monotonic() - started
    return False


def _note_retry_after(env: SyncEnvironment, run_id: str, connection_id: str, exc: Exception) -> None:
    """BDX-07/BDX-10: a kick-off the EHR throttled (429, or 503 with Retry-After): the scheduler asks for nothing
    before the time it named, or ``DEFAULT_WAIT_S`` when it named none (a day at most), as for a REST step's
    throttle (``engine.batch_defer.throttle_end``); before, a silent 429 noted nothing and Dagster's automatic retry
    kicked off into it at once. A refusal of ehrsync's own (the export slot busy: no answer) notes none. Any other
    source-wide stop (a long throttle on the CapabilityStatement read or a file download, an unreachable source)
    notes its hold as a REST step's does (``engine.run_holds.note_source_throttle``); a hold is never shortened."""
    if isinstance(exc, BulkExportBusyError):
        if exc.status is not None or exc.retry_after:
            note_hold(env.db, run_id, throttle_end(utcnow(), exc.retry_after))
        return
    note_source_throttle(env.db, run_id, connection_id, rate_limit_in(exc) or exc)


def _incomplete(types: list[str]) -> BulkExportIncompleteError:
    named = ", ".join("all types (a failure named none)" if t == WHOLE_EXPORT else t for t in types)
    return BulkExportIncompleteError(
        f"the export is incomplete for {named} (its error files report failures, or a file held fewer resources "
        "than the manifest's count); what arrived was merged, _since was not advanced, so the next run exports "
        "them again",
        types,
    )


def _run_counts(report: BulkReport) -> dict[str, Any]:
    counts: dict[str, Any] = report.counts()
    counts["_bulk"] = {
        "job_id": report.job_id,
        "files": report.files,
        "error_files": report.error_files,
        "error_outcomes": report.error_outcomes,
        "failed_files": report.failed_files,
        "incomplete_types": report.incomplete_types,
        "reruns": report.reruns,
        "resumed": report.resumed,
        "count_mismatches": report.count_mismatched,
        "membership_checked": report.membership_checked,
        "new_members": report.new_members,
        "removed_members": report.removed_members,
        "transaction_time": report.transaction_time.isoformat() if report.transaction_time else None,
    }
    return counts


def _run(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: BulkClient,
    run_id: str,
    level: ExportLevel,
    group_id: str | None,
    spec: ExportSpec,
    report: BulkReport,
    progress: BulkProgress | None,
    on_files: FileHandler | None = None,
    on_complete: OnComplete | None = None,
) -> JobView:
    """One export to its end: ``on_files`` replaces land-and-upsert; ``on_complete`` joins the final commit."""
    job = bulk_state.find_active_job(env.db, conn.id, spec.stream, spec.key)
    report.resumed = job is not None
    since: datetime | None = None
    if job is not None:
        since = job.since_used
    elif spec.incremental:
        since = cursors.get_mark(env.db, conn.id, spec.stream, spec.key)
    while True:
        if job is None:
            job = kickoff(env, conn, client, run_id, level, group_id, spec, since)
        report.job_id, report.since = job.id, job.since_used
        if job.status == "polling":
            polled = await_manifest(env, client, job, progress)
            if polled is None:  # BDX-08: the saved status URL is gone, start over (a bounded number of times)
                report.reruns += 1
                if report.reruns > env.bulk_max_reruns:
                    raise BulkExportError(f"bulk status URL kept answering 404/410 ({report.reruns} kick-offs)")
                job = None
                continue
            job = polled
        report.transaction_time = job.transaction_time
        try:
            if on_files is None:
                process_files(env, conn, client, job, run_id, report, progress)
            else:
                on_files(job)
        except ExportExpiredError as exc:
            bulk_state.set_job_status(env.db, job.id, "abandoned", str(exc))
            cancel_quietly(client, job)
            report.reruns += 1
            if report.reruns > env.bulk_max_reruns:
                raise BulkExportError(f"export files kept expiring ({report.reruns} exports); giving up") from exc
            _log.warning("bulk file of job %s expired; re-running the export from the same _since", job.id)
            since, job = job.since_used, None
            continue
        _complete(env, job, conn.id, spec, run_id, report, on_complete)
        return job


def _complete(
    env: SyncEnvironment,
    job: JobView,
    connection_id: str,
    spec: ExportSpec,
    run_id: str,
    report: BulkReport,
    on_complete: OnComplete | None,
) -> None:
    """Advance ``_since`` to the export's transactionTime (no later than this host's clock: ``next_since``) in the
    commit that marks the job complete (BDX-14);
    a full follow-up export (BDX-15) leaves the marks alone and commits its ``on_complete`` state instead.

    When the job's ``error`` files report failed types (BDX-22), the job ends ``incomplete`` and the mark is
    held: what did arrive is merged, and the next export asks again from the old ``_since``.
    """
    missed = bulk_state.incomplete_types(env.db, job.id)
    report.incomplete_types = sorted(set(report.incomplete_types) | set(missed))
    since, clock_warning = next_since(job)
    # The write lock before the first read (SQLite BEGIN IMMEDIATE): a writer committing between the job's read and
    # its write would otherwise fail this commit at once with "database is locked" (as ``upsert_resource_type``).
    with env.db.locked_session() as session:
        row = bulk_state.job_row(session, job.id)
        row.status = "incomplete" if missed else "completed"
        row.error = f"incomplete for: {', '.join(missed)} (error files or short files)" if missed else None
        if spec.incremental and not missed:
            cursors.advance(session, connection_id, spec.stream, spec.key, run_id, since)
        if on_complete is not None and not missed:  # e.g. new members stay "new" until their export is whole
            on_complete(session)
        session.commit()
    if spec.incremental and not missed:
        report.mark_stored = since
        for type_report in report.types.values():
            type_report.high_water_mark = since
            if clock_warning:
                type_report.warnings.append(clock_warning)
        if clock_warning:
            _log.warning("bulk export of %s: %s", connection_id, clock_warning)
    checkpoint("bulk.completed")
