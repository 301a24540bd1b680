"""Sync on demand: submit a connection's Dagster run, and report runs from ``sync_runs`` reconciled with Dagster.

The run is launched through the webserver's GraphQL API (the auth service never imports Dagster). Its
``sync_runs`` row is keyed by the Dagster run id, the key the pipelines use, so the run's own bookkeeping
(``ensure_run``) finds and reuses the ``queued`` row written here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from auth_service.services.connections import get_connection
from auth_service.services.context import ServiceContext
from auth_service.services.dagster_client import (
    IN_FLIGHT_STATUSES,
    DagsterGraphQLClient,
    OrchestratorError,
    OrchestratorUnavailableError,
    RunState,
)
from auth_service.services.errors import (
    ConnectionInactiveError,
    NotFoundError,
    NotSyncableError,
    SyncInProgressError,
    SyncRefusedError,
)
from auth_service.services.tenants import get_practice_settings
from engine.connection_snapshots import NO_PATIENT, NO_PATIENT_WHY, lacks_patient, read_connection
from engine.models import SyncRun, utcnow
from engine.run_tags import connection_run_tags
from store.audit import record_audit
from store.models import Connection, ConnectionStatus, Tenant

__all__ = [
    "BULK_CONNECTIONS_PARTITIONS",
    "BULK_KINDS",
    "PATIENT_CONNECTIONS_PARTITIONS",
    "job_for",
    "start_sync",
    "sync_history",
    "sync_status",
]

logger = logging.getLogger(__name__)

# Names shared with the pipelines layer (pipelines/defs/_shared/partitions.py, pipelines/defs/*.py).
PATIENT_CONNECTIONS_PARTITIONS = "patient_connections"
BULK_CONNECTIONS_PARTITIONS = "bulk_connections"
BULK_KINDS = frozenset({"backend", "group"})
_OPEN = ("queued", "running")


def job_for(conn: Connection, mode: str) -> tuple[str, str]:
    """(Dagster job, ``sync_runs.kind``): backend/group connections export in bulk, patients sync by REST."""
    if conn.kind in BULK_KINDS:
        return "bulk_export", "bulk"
    return ("full_resync", "full") if mode == "full" else ("incremental_sync", "incremental")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _orchestrator(exc: OrchestratorError) -> SyncRefusedError:
    if isinstance(exc, OrchestratorUnavailableError):
        message = f"the sync orchestrator is unavailable: {exc.message}"
        return SyncRefusedError(message, code="orchestrator_unavailable")
    return SyncRefusedError(f"the sync orchestrator refused the run: {exc.message}", code="orchestrator_rejected")


def _refuse_if_running(ctx: ServiceContext, dagster: DagsterGraphQLClient, conn: Connection) -> None:
    """One run per connection at a time: a second one would race the first over the same cursors."""
    with ctx.db.session() as session:
        open_ids = session.scalars(
            select(SyncRun.id).where(SyncRun.connection_id == conn.id, SyncRun.status.in_(_OPEN))
        ).all()
    for run_id in open_ids:
        try:
            state = dagster.run_status(run_id)
        except OrchestratorError as exc:
            raise _orchestrator(exc) from None
        if state in IN_FLIGHT_STATUSES:
            raise SyncInProgressError(run_id)


def _record_queued(ctx: ServiceContext, conn: Connection, run_id: str, kind: str) -> None:
    """Insert the ``queued`` row unless the run's first step already created it (then it is left alone)."""
    try:
        with ctx.db.locked_session() as session:
            if session.get(SyncRun, run_id) is None:
                session.add(
                    SyncRun(
                        id=run_id,
                        connection_id=conn.id,
                        tenant_id=conn.tenant_id,
                        kind=kind,
                        status="queued",
                        created_at=utcnow(),
                        counts={},
                        bytes=0,
                    )
                )
    except IntegrityError:
        logger.info("sync run %s was recorded by the run itself first", run_id)


def start_sync(
    ctx: ServiceContext, dagster: DagsterGraphQLClient, tenant_id: str, connection_id: str, mode: str, actor: str
) -> dict[str, Any]:
    """Submit the connection's job for its partition; 409 when inactive, busy or never syncable (no patient), 503
    when Dagster is down."""
    conn = get_connection(ctx, tenant_id, connection_id)
    if lacks_patient(conn.kind, conn.patient_id):  # whatever its status: no sync would ever work
        raise NotSyncableError(f"connection {NO_PATIENT_WHY}; nothing was submitted", NO_PATIENT)
    if conn.status != ConnectionStatus.ACTIVE:
        raise ConnectionInactiveError(conn.status)
    if conn.kind in BULK_KINDS:
        _require_bulk_enabled(ctx, tenant_id)
    job, kind = job_for(conn, mode)
    try:
        where = dagster.find_job(job)
        _refuse_if_running(ctx, dagster, conn)
        partitions = BULK_CONNECTIONS_PARTITIONS if conn.kind in BULK_KINDS else PATIENT_CONNECTIONS_PARTITIONS
        created = dagster.add_dynamic_partition(where, partitions, conn.id)
        # the job's own config for the partition (full_resync: every landing op ``full: true``); a bare launch
        # would run every op with its defaults, i.e. an incremental sync
        run_config = dagster.partition_run_config(where, conn.id)
        # the tags every ehrsync run carries (the UI filters on them, dagster.yaml limits runs per source)
        tags = {"dagster/partition": conn.id, **connection_run_tags(read_connection(ctx.db, conn.id), "api")}
        run_id = dagster.launch_run(where, tags, run_config)
    except OrchestratorError as exc:
        logger.warning("sync of connection %s not submitted: %s", conn.id, exc.code)
        raise _orchestrator(exc) from None
    _record_queued(ctx, conn, run_id, kind)
    with ctx.db.locked_session() as session:
        record_audit(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="sync.start",
            outcome="success",
            connection_id=conn.id,
            detail={"job": job, "run_id": run_id, "partition_created": created},
        )
    logger.info("submitted %s run %s for connection %s", job, run_id, conn.id)
    return {"syncId": run_id, "status": "queued", "dagsterRunId": run_id, "job": job, "kind": kind}


def _effective_status(row_status: str, dagster_status: str | None) -> str:
    """What to report while the row may lag Dagster (the run-end sensor closes rows on its own schedule)."""
    if row_status not in _OPEN or dagster_status is None:
        return row_status
    if dagster_status in ("FAILURE", "CANCELED"):
        return "failed"
    if dagster_status == "SUCCESS":
        return "completed"  # every step has committed its counts by now
    if dagster_status in ("STARTING", "STARTED", "CANCELING"):
        return "running"
    return row_status


def _times(row: SyncRun, state: RunState | None, status: str) -> tuple[datetime | None, datetime | None, float | None]:
    """(started, finished, duration): the row's, or Dagster's run record's while the row lags a finished run."""
    if row.status not in _OPEN or status in _OPEN or state is None:
        return row.started_at, row.finished_at, row.duration_s
    started = state.started_at or row.started_at
    finished = state.ended_at
    duration = (finished - started).total_seconds() if finished is not None and started is not None else None
    return started, finished, duration


def _render(row: SyncRun, state: RunState | None = None, orchestrator: str | None = None) -> dict[str, Any]:
    dagster_status = state.status if state is not None else None
    status = _effective_status(row.status, dagster_status)
    if status != row.status and status not in _OPEN and (state is None or state.ended_at is None):
        status = row.status  # Dagster says it ended but not when: never report an end without its time
    error = row.error
    if status == "failed" and row.status in _OPEN:
        error = f"Dagster run ended {dagster_status}"
    started, finished, duration = _times(row, state, status)
    return {
        "syncId": row.id,
        "dagsterRunId": row.id,
        "connectionId": row.connection_id,
        "kind": row.kind,
        "status": status,
        "dagsterStatus": dagster_status,
        "orchestrator": orchestrator,
        "counts": dict(row.counts or {}),
        "bytes": row.bytes,
        "createdAt": _iso(row.created_at),
        "startedAt": _iso(started),
        "finishedAt": _iso(finished),
        "durationS": duration,
        "error": error,
    }


def _load_run(ctx: ServiceContext, tenant_id: str, sync_id: str) -> SyncRun:
    """The run if its connection belongs to ``tenant_id`` (by the row's tenant, else the connection's)."""
    with ctx.db.session() as session:
        row = session.get(SyncRun, sync_id)
        owner = row.tenant_id if row is not None else None
        if row is not None and owner is None:
            conn = session.get(Connection, row.connection_id)
            owner = conn.tenant_id if conn is not None else None
        if row is None or owner != tenant_id:
            raise NotFoundError("no such sync for this tenant")
        session.expunge(row)
        return row


def _reconciled(row: SyncRun, dagster: DagsterGraphQLClient) -> dict[str, Any]:
    """The row as reported: while it is open, Dagster's status wins (a run Dagster failed is failed at once)."""
    if row.status not in _OPEN:
        return _render(row)
    try:
        return _render(row, dagster.run_state(row.id), "ok")
    except OrchestratorUnavailableError:
        return _render(row, None, "unavailable")
    except OrchestratorError as exc:
        logger.warning("Dagster status of run %s unreadable: %s", row.id, exc.code)
        return _render(row, None, "error")


def sync_status(ctx: ServiceContext, dagster: DagsterGraphQLClient, tenant_id: str, sync_id: str) -> dict[str, Any]:
    """One run of the tenant's, reconciled with Dagster while open."""
    return _reconciled(_load_run(ctx, tenant_id, sync_id), dagster)


def sync_history(
    ctx: ServiceContext, dagster: DagsterGraphQLClient, tenant_id: str, connection_id: str, limit: int
) -> list[dict[str, Any]]:
    """The connection's runs, newest first; only open rows (few: one run per connection at a time) ask Dagster."""
    conn = get_connection(ctx, tenant_id, connection_id)
    with ctx.db.session() as session:
        rows = session.scalars(
            select(SyncRun)
            .where(SyncRun.connection_id == conn.id)
            .order_by(SyncRun.created_at.desc(), SyncRun.id.desc())
            .limit(limit)
        ).all()
        for row in rows:
            session.expunge(row)
    reports: list[dict[str, Any]] = []
    reachable = True  # one unreachable answer is enough: do not wait out a timeout per row
    for row in rows:
        if reachable:
            reports.append(_reconciled(row, dagster))
            reachable = reports[-1]["orchestrator"] != "unavailable"
        else:
            reports.append(_render(row, None, "unavailable") if row.status in _OPEN else _render(row))
    return reports


def start_bulk(
    ctx: ServiceContext, dagster: DagsterGraphQLClient, tenant_id: str, connection_id: str, actor: str
) -> dict[str, Any]:
    """A Bulk export needs a backend/group connection and the tenant's ``enableBulkExport`` flag."""
    conn = get_connection(ctx, tenant_id, connection_id)
    if conn.kind not in BULK_KINDS:
        raise SyncRefusedError(f"connection kind {conn.kind!r} cannot export in bulk (backend or group)")
    return start_sync(ctx, dagster, tenant_id, connection_id, "full", actor)


def _require_bulk_enabled(ctx: ServiceContext, tenant_id: str) -> None:
    """Every Bulk export, whichever endpoint asked for it, needs the tenant's ``enableBulkExport`` flag."""
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        enabled = tenant is not None and get_practice_settings(tenant).switches_on("enableBulkExport")
    if not enabled:
        raise SyncRefusedError("the tenant's ehrIntegrations.enableBulkExport flag is off")
