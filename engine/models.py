"""Sync-state tables (revision 0002, owned by ``pipelines``): run history, cursors, Bulk jobs, attachments.

They live in the app database beside ``connections`` so a cursor and the run that advanced it commit together,
and so a crashed Bulk export can be resumed from its saved status URL (BDX-08) by any process.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, utcnow
from store.models import UTCDateTime as UtcDateTime

__all__ = ["BulkJob", "BulkJobFile", "ExportSlotClaim", "SyncAttachment", "SyncCursor", "SyncRun", "utcnow"]


class SyncRun(Base):
    """One sync of one connection (incremental, full or bulk): what the history API and the UI show."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_connection_created", "connection_id", "created_at"),
        Index("ix_sync_runs_connection_status_created", "connection_id", "status", "created_at"),
        # the hourly read of the holds that ended (``engine.retries.holds_ended``); revision 0014
        Index(
            "ix_sync_runs_not_before",
            "not_before",
            "connection_id",
            sqlite_where=text("not_before IS NOT NULL"),
            postgresql_where=text("not_before IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # incremental | full | bulk
    # queued|running|completed|failed|abandoned|deferred
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    # The process that last marked the run running (a run's steps share one process: in-process executors),
    # so that a later run closes it as abandoned only once that process is gone.
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_host: Mapped[str | None] = mapped_column(String(255))
    # When the EHR said to come back (a throttle's Retry-After, a quota's reset): not asked for again before it.
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SyncCursor(Base):
    """A high-water mark per (connection, stream, resource type) plus the landing waiting to be upserted.

    ``stream`` is ``rest`` for search-based sync or ``bulk:<level>:<group>`` for exports (``resource_type`` then
    names the sorted type set). ``pending_*`` hold what ``land_resource_type`` landed so ``upsert_resource_type``
    (possibly another process) can finish the step; the mark only moves when that upsert commits.
    """

    __tablename__ = "sync_cursors"

    connection_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(1000), primary_key=True)
    high_water_mark: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    pending_run_id: Mapped[str | None] = mapped_column(String(64))
    pending_mark: Mapped[datetime | None] = mapped_column(UtcDateTime())
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)


class BulkJob(Base):
    """A Bulk ``$export`` saved before its first poll (BDX-08) so a restarted run resumes it."""

    __tablename__ = "bulk_jobs"
    __table_args__ = (Index("ix_bulk_jobs_connection_status", "connection_id", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(64), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    stream: Mapped[str] = mapped_column(String(200), nullable=False)
    type_key: Mapped[str] = mapped_column(String(1000), nullable=False)
    level: Mapped[str] = mapped_column(String(16), nullable=False)  # system | patient | group
    group_id: Mapped[str | None] = mapped_column(String(200))
    types: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    since_used: Mapped[datetime | None] = mapped_column(UtcDateTime())
    kickoff_url: Mapped[str] = mapped_column(Text, nullable=False)
    status_url: Mapped[str] = mapped_column(Text, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)
    # polling | downloading | completed | failed | abandoned
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    transaction_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    requires_access_token: Mapped[bool | None] = mapped_column()
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)


class ExportSlotClaim(Base):
    """A kick-off under way on an export slot (``engine.export_slots``), taken before the ``$export`` request and given
    back once its job is saved (the ``polling`` job then holds the slot) or the kick-off failed. The primary key
    makes the claim atomic across processes; the owner names who took it, so a crashed taker's claim is not kept."""

    __tablename__ = "export_slot_claims"

    slot: Mapped[str] = mapped_column(String(80), primary_key=True)  # engine.export_slot_tags.export_slot's value
    token: Mapped[str] = mapped_column(String(32), nullable=False)  # this claim's own (given back by it only)
    connection_id: Mapped[str] = mapped_column(String(64), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    owner_pid: Mapped[int] = mapped_column(Integer, nullable=False)
    owner_host: Mapped[str] = mapped_column(String(255), nullable=False)
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)
    # Past this, the claim is taken over: its taker sets it a lease ahead and renews it while it kicks off
    # (``engine.export_slot_lease``), up to its own ``engine.export_slots.claim_ttl``, so hosts configured apart agree.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class BulkJobFile(Base):
    """One manifest item and how far it got: ``pending`` → ``landed`` → ``done`` (or ``failed``)."""

    __tablename__ = "bulk_job_files"
    __table_args__ = (UniqueConstraint("job_id", "url", name="uq_bulk_job_files_job_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("bulk_jobs.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # output | error | deleted
    resource_type: Mapped[str] = mapped_column(String(100), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    expected_count: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    landed_path: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)


class SyncAttachment(Base):
    """Links a resource's attachment URL to its content-addressed copy; a URL already stored is not fetched again."""

    __tablename__ = "sync_attachments"
    __table_args__ = (
        UniqueConstraint("connection_id", "resource_type", "resource_id", "url", name="uq_sync_attachments_ref"),
        Index("ix_sync_attachments_connection_url", "connection_id", "url"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(String(64), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    resource_type: Mapped[str] = mapped_column(String(100), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(200), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_type: Mapped[str] = mapped_column(String(200), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, default=utcnow)
