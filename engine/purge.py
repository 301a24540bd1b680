"""Purge: remove everything ehrsync holds of one connection's synced data, audited with counts.

What goes: the landing zone's files of the connection (Parquet, quarantine, download leftovers), its rows in every
per-connection warehouse table (``fhir_resources``, errors, quarantine, attachment links; the analyst views read
``fhir_resources`` live, and on DuckDB a published analyst snapshot is replaced by one without the connection,
older generations deleted), its attachment blobs that no other connection references, and its engine state
(``sync_cursors``, ``bulk_jobs``, ``bulk_job_files``, ``sync_attachments``). What stays: the ``connections`` row
(``data_purged_at`` set), its run history (``sync_runs``: counts and redacted errors, no content), the audit trail.

Only a *disconnected* connection is purged (``PurgeRefusedError`` otherwise): an active one would be filled
again by its next sync. Callers that mean "disconnect and purge" disconnect first (``ehrsync purge
--disconnect``, the admin API's ``disconnect: true``). The purge holds the connection's lock, so no sync,
reconcile or landing retention of the connection runs beside it, and each part is idempotent with the
completion (``data_purged_at`` and the audit event) committed last: a purge that died midway is simply run again.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine.checkpoints import checkpoint
from engine.connection_lock import connection_lock
from engine.environment import SyncEnvironment
from engine.errors import ConnectionNotFoundError, SyncError
from engine.models import BulkJob, BulkJobFile, SyncAttachment, SyncCursor, utcnow
from engine.residue import attachment_tmp_root
from store import AppDatabase
from store.audit import record_audit
from store.models import Connection, ConnectionStatus
from store.outbox_redaction import note_redactions
from warehouse import VIEW_NAMES, AttachmentStore, Warehouse, open_warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.errors import WarehouseError
from warehouse.note_outbox import NOTE_OUTBOX_TABLE, ensure_note_outbox_table
from warehouse.snapshot import analyst_root, generations, publish_snapshot
from warehouse.view_refresh import refresh_analyst_views

__all__ = [
    "PURGE_ACTION",
    "PurgeRefusedError",
    "PurgeReport",
    "PurgeSubject",
    "PurgeTargets",
    "PurgeWarehouseError",
    "purge_connection",
    "purge_subject",
]

_log = logging.getLogger(__name__)
PURGE_ACTION = "connection.purge"
_SAFE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class PurgeRefusedError(SyncError):
    """Only a disconnected connection is purged: an active one would be refilled by its next sync."""

    code = "connection_not_disconnected"


# Without a configured wait (library callers), the warehouse's own default writer wait.
WAREHOUSE_WAIT_S = 300.0


class PurgeWarehouseError(SyncError):
    """The warehouse could not be purged now (held by a sync past the wait, or unreachable); what was removed stays
    removed and running the purge again finishes it. The message names the error type, never a path or URL."""

    code = "warehouse_unavailable"


@dataclass(frozen=True)
class PurgeTargets:
    """Where a connection's data lives: the app database, the landing zone, the attachment store, the warehouse."""

    db: AppDatabase
    landing_root: Path
    attachments: AttachmentStore
    warehouse_target: str
    lock_wait_s: float | None = None  # None: EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS
    duckdb: tuple[str | None, int | None] = (None, None)  # EHRSYNC_DUCKDB_MEMORY_LIMIT, EHRSYNC_DUCKDB_THREADS

    @classmethod
    def of(cls, env: SyncEnvironment) -> PurgeTargets:
        duckdb = (env.duckdb_memory_limit, env.duckdb_threads)
        return cls(env.db, Path(env.zone.root), env.attachments, env.warehouse_target, env.lock_wait_s, duckdb)

    @classmethod
    def at(cls, db: AppDatabase, state_dir: Path, warehouse_target: str, **kw: Any) -> PurgeTargets:
        """The state directory's layout (``<state>/landing``, ``<state>/attachments``), as the settings lay it out."""
        return cls(db, state_dir / "landing", AttachmentStore(state_dir / "attachments"), warehouse_target, **kw)


@dataclass(frozen=True)
class PurgeReport:
    """What one purge removed (a repeated purge reports zeros)."""

    connection_id: str
    tenant_id: str | None
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    landing_files: int = 0
    attachment_files: int = 0
    attachment_rows: int = 0
    engine_rows: dict[str, int] = field(default_factory=dict)
    purged_at: datetime | None = None

    def counts(self) -> dict[str, int]:
        """Flat counts for audit events, CLI output and Dagster metadata."""
        return {
            "warehouse_rows": sum(self.warehouse_rows.values()),
            "landing_files": self.landing_files,
            "attachment_files": self.attachment_files,
            "attachment_rows": self.attachment_rows,
            **self.engine_rows,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "purged_at": self.purged_at.isoformat() if self.purged_at else None,
            "counts": self.counts(),
            "warehouse_tables": dict(sorted(self.warehouse_rows.items())),
        }


def purge_connection(targets: PurgeTargets, connection_id: str, *, actor: str = "system") -> PurgeReport:
    """Purge a disconnected connection's data (see the module docstring); raises ``ConnectionNotFoundError``,
    ``PurgeRefusedError`` or, when a sync holds it past the wait, ``ConnectionBusyError``."""
    tenant_id = _check_purgeable(targets.db, connection_id, refuse=False)
    holder = f"purge-{uuid.uuid4().hex[:12]}"
    try:
        _check_purgeable(targets.db, connection_id)
        with connection_lock(targets.landing_root, connection_id, holder, wait_s=targets.lock_wait_s):
            report = _purge_locked(targets, connection_id, tenant_id, actor)
    except (SyncError, WarehouseError, OSError, SQLAlchemyError) as exc:
        _audit_failure(targets.db, connection_id, tenant_id, actor, exc)
        if isinstance(exc, WarehouseError):  # a clear error for the CLI and the API, not a traceback or a 500
            raise PurgeWarehouseError(
                f"the warehouse could not be purged now ({type(exc).__name__}); run the purge again"
            ) from exc
        raise
    _log.info("purged connection %s: %s", connection_id, report.counts())
    return report


@dataclass(frozen=True)
class PurgeSubject:
    """The connection a purge is about, as a confirmation prompt shows it (no PHI: ids, provider, status)."""

    id: str
    tenant_id: str | None
    provider_id: str
    kind: str
    status: str
    disconnected_at: datetime | None
    data_purged_at: datetime | None


def purge_subject(db: AppDatabase, connection_id: str) -> PurgeSubject:
    """The connection's facts; ``ConnectionNotFoundError`` naming the id when there is no such connection."""
    with db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise ConnectionNotFoundError(f"connection {connection_id!r} not found")
        return PurgeSubject(
            conn.id, conn.tenant_id, conn.provider_id, conn.kind, conn.status, conn.disconnected_at, conn.data_purged_at
        )


def _check_purgeable(db: AppDatabase, connection_id: str, *, refuse: bool = True) -> str | None:
    """The connection's tenant; ``ConnectionNotFoundError``, and (``refuse``) ``PurgeRefusedError`` unless it
    is disconnected (a state it never leaves: reconnecting makes a new connection)."""
    subject = purge_subject(db, connection_id)
    if refuse and subject.status != ConnectionStatus.DISCONNECTED:
        raise PurgeRefusedError(
            f"connection {connection_id} is {subject.status}: only a disconnected connection is purged (its next "
            "sync would fill it again); disconnect it first, or purge with --disconnect / disconnect=true"
        )
    return subject.tenant_id


def _purge_locked(targets: PurgeTargets, connection_id: str, tenant_id: str | None, actor: str) -> PurgeReport:
    with targets.db.session() as session:
        job_ids = list(session.scalars(select(BulkJob.id).where(BulkJob.connection_id == connection_id)))
    landing_files = _remove_landing(targets.landing_root, connection_id, job_ids)
    attachment_files = _remove_blobs(targets.db, targets.attachments, connection_id)
    checkpoint("purge.files_removed")
    # The warehouse wait is bounded like the connection lock's: an admin request never hangs for a Bulk merge.
    wait = targets.lock_wait_s if targets.lock_wait_s is not None else WAREHOUSE_WAIT_S
    memory, threads = targets.duckdb
    with open_warehouse(
        targets.warehouse_target, lock_timeout_s=wait, duckdb_memory_limit=memory, duckdb_threads=threads
    ) as wh:
        warehouse_rows = wh.purge_connection(connection_id)
        _republish_snapshot(wh)
    checkpoint("purge.warehouse_purged")
    now = utcnow()
    with targets.db.locked_session() as session:
        engine_rows = _delete_rows(session, connection_id, job_ids)
        attachment_rows = engine_rows.pop("attachment_rows")
        report = PurgeReport(
            connection_id, tenant_id, warehouse_rows, landing_files, attachment_files, attachment_rows, engine_rows, now
        )
        conn = session.get(Connection, connection_id)
        if conn is not None:
            conn.data_purged_at = now
        detail = {**report.counts(), "warehouse_tables": sorted(warehouse_rows)}
        record_audit(
            session, action=PURGE_ACTION, outcome="success", tenant_id=tenant_id, actor=actor,
            connection_id=connection_id, detail=detail,
        )  # fmt: skip
        session.commit()
    return report


def _republish_snapshot(wh: Warehouse) -> None:
    """DuckDB: the analyst snapshot's generations are copies of the views, still holding the purged rows. Publish
    one without them and keep only it (an analyst session holding an older file keeps reading it until it closes)."""
    if isinstance(wh, DuckDBWarehouse) and generations(analyst_root(wh.path)):
        refresh_analyst_views(wh)
        ensure_note_outbox_table(wh)
        publish_snapshot(wh, (*VIEW_NAMES, NOTE_OUTBOX_TABLE), keep=1)


def _delete_rows(session: Session, connection_id: str, job_ids: list[str]) -> dict[str, int]:
    """The connection's engine state, deleted inside the caller's (completing) transaction."""
    statements = {
        "bulk_job_files": delete(BulkJobFile).where(BulkJobFile.job_id.in_(job_ids)),
        "bulk_jobs": delete(BulkJob).where(BulkJob.connection_id == connection_id),
        "sync_cursors": delete(SyncCursor).where(SyncCursor.connection_id == connection_id),
        "attachment_rows": delete(SyncAttachment).where(SyncAttachment.connection_id == connection_id),
        **note_redactions(connection_id),  # draft notes keep their metadata, never their text
    }
    return {name: int(getattr(session.execute(stmt), "rowcount", 0) or 0) for name, stmt in statements.items()}


def _files_under(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0


def _remove_tree(directory: Path) -> int:
    files = _files_under(directory)
    if directory.is_dir():
        shutil.rmtree(directory)
    return files


def _remove_landing(root: Path, connection_id: str, job_ids: list[str]) -> int:
    """The connection's landing folder, its attachment download folder and its Bulk jobs' download folders."""
    removed = _remove_tree(attachment_tmp_root(root, connection_id))
    removed += sum(_remove_tree(root / ".bulk-tmp" / job) for job in job_ids if _SAFE_DIR.fullmatch(job))
    if _SAFE_DIR.fullmatch(connection_id):  # a name the landing zone could never have used has no folder
        removed += _remove_tree(root / connection_id)
    return removed


def _remove_blobs(db: AppDatabase, store: AttachmentStore, connection_id: str) -> int:
    """Delete the blobs only this connection references (the store is content-addressed and shared).

    Blobs go before their rows: a purge that dies in between finds the rows again and deletes nothing twice."""
    with db.session() as session:
        mine = set(session.scalars(select(SyncAttachment.sha256).where(SyncAttachment.connection_id == connection_id)))
        shared = set(
            session.scalars(
                select(SyncAttachment.sha256).where(
                    SyncAttachment.connection_id != connection_id, SyncAttachment.sha256.in_(mine)
                )
            )
        )
    removed = 0
    for sha in sorted(mine - shared):
        path = store.path_for(sha)
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _audit_failure(db: AppDatabase, connection_id: str, tenant_id: str | None, actor: str, exc: Exception) -> None:
    """Best effort: the failure is recorded with its error code (never its message, which may name paths)."""
    code = getattr(exc, "code", None) or type(exc).__name__
    try:
        with db.locked_session() as session:
            record_audit(
                session, action=PURGE_ACTION, outcome="failure", tenant_id=tenant_id, actor=actor,
                connection_id=connection_id, detail={"error_code": str(code)},
            )  # fmt: skip
            session.commit()
    except SQLAlchemyError:
        _log.warning("could not audit the failed purge of connection %s", connection_id)
