"""Bulk status for host apps: a sync's run (reconciled with Dagster) plus the Bulk ``$export`` job it ran.

A group connection's run may run up to three jobs: the export, then (BDX-15) an export of the group's member
ids and one of new members' records. Only the first is "the export of that sync"; and a resumed export keeps
the run id of the run that kicked it off, so the job is found through the run's own summary, not by run id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from auth_service.services.context import ServiceContext
from auth_service.services.dagster_client import DagsterGraphQLClient
from auth_service.services.sync_api import sync_status
from engine.models import BulkJob, BulkJobFile, SyncRun

__all__ = ["bulk_status", "export_job"]

_OPEN = ("queued", "running")
# Names shared with the Bulk engine: its run counts summary (engine/bulk_export.py ``_run_counts``), the
# membership streams' suffix (engine/bulk_members.py ``members_stream``), and unfinished job states.
_BULK_COUNTS = "_bulk"
_MEMBERS_STREAM_SUFFIX = ":members"
_ACTIVE_JOB = ("polling", "downloading")


def export_job(session: Session, row: SyncRun) -> BulkJob | None:
    """The export job of this sync, never one of its group-membership jobs (member ids, new members' export).

    A closed run names its export in ``counts._bulk.job_id`` (it may carry an earlier run's id: a resumed
    export keeps the run id of the run that kicked it off). An open run is exporting the connection's job in
    progress, or has just finished it (one run per connection at a time; a resumed one included). Otherwise:
    the newest export this run kicked off, if any.
    """
    summary = (row.counts or {}).get(_BULK_COUNTS)
    recorded = summary.get("job_id") if isinstance(summary, dict) else None
    if isinstance(recorded, str) and recorded:
        job = session.get(BulkJob, recorded)
        if job is not None:
            return job
    exports = (
        select(BulkJob)
        .where(BulkJob.connection_id == row.connection_id, BulkJob.stream.not_like(f"%{_MEMBERS_STREAM_SUFFIX}"))
        .order_by(BulkJob.requested_at.desc(), BulkJob.id.desc())
        .limit(1)
    )
    if row.status in _OPEN:
        began = row.started_at or row.created_at
        current = session.scalars(
            exports.where(or_(BulkJob.status.in_(_ACTIVE_JOB), BulkJob.updated_at >= began))
        ).first()
        if current is not None:
            return current
    return session.scalars(exports.where(BulkJob.run_id == row.id)).first()


def bulk_status(ctx: ServiceContext, dagster: DagsterGraphQLClient, tenant_id: str, sync_id: str) -> dict[str, Any]:
    """The run's status plus its Bulk export job (status URL presence, transactionTime, files done/total)."""
    status = sync_status(ctx, dagster, tenant_id, sync_id)
    with ctx.db.session() as session:
        row = session.get(SyncRun, sync_id)
        job = export_job(session, row) if row is not None else None
        if job is None:
            return {**status, "bulk": None}
        by_state = dict(
            session.execute(
                select(BulkJobFile.state, func.count())
                .where(BulkJobFile.job_id == job.id, BulkJobFile.kind == "output")
                .group_by(BulkJobFile.state)
            ).all()
        )
        bulk = {
            "jobId": job.id,
            "status": job.status,
            "level": job.level,
            "types": list(job.types or []),
            "statusUrlPresent": bool(job.status_url),
            "transactionTime": job.transaction_time.isoformat() if job.transaction_time else None,
            "filesDone": int(by_state.get("done", 0)),
            "filesFailed": int(by_state.get("failed", 0)),
            "filesTotal": int(sum(by_state.values())),
            "error": job.error,
        }
    return {**status, "bulk": bulk}
