"""Persistence of Bulk exports (``bulk_jobs``, ``bulk_job_files``): the state that makes an export resumable.

The job row is written before the first poll (BDX-08); the manifest and one row per file before the first
download; each file then moves ``pending`` → ``landed`` → ``done``. A restarted run reads these rows and
continues where the dead one stopped instead of asking the server for a new export.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.http import redact_url
from engine.models import BulkJob, BulkJobFile, utcnow
from engine.row_views import row_view
from store import AppDatabase

ACTIVE = ("polling", "downloading")


@dataclass(frozen=True)
class JobView:
    id: str
    run_id: str
    status: str
    level: str
    group_id: str | None
    types: list[str]
    status_url: str
    since_used: datetime | None
    transaction_time: datetime | None
    requires_access_token: bool | None
    params: dict[str, Any] | None = None  # the kick-off parameters as recorded (``patient`` refs for BDX-15)
    requested_at: datetime | None = None  # when the kick-off was accepted (the job's deadline counts from it)


@dataclass(frozen=True)
class FileView:
    id: int
    kind: str
    resource_type: str
    url: str
    expected_count: int | None
    state: str
    landed_path: str | None
    attempts: int
    error: str | None = None

    @property
    def stored_source(self) -> str:
        """How the file is named where it is stored (every row's ``source``, its error records): the URL without
        its path parameters or query (``redact_url``), which on a storage host are a signature or a session id (a
        credential to the export's data until it expires), and the file's id, so files that differ only there stay
        apart."""
        return f"{redact_url(self.url)}#{self.id}"


@dataclass(frozen=True)
class ManifestFile:
    """One manifest item as the engine stores it (``kind`` is output, error or deleted)."""

    kind: str
    resource_type: str
    url: str
    count: int | None


def _job_view(row: BulkJob) -> JobView:
    return row_view(JobView, row, types=list(row.types or []), params=dict(row.params) if row.params else None)


def _file_view(row: BulkJobFile) -> FileView:
    return row_view(FileView, row)


def find_active_job(db: AppDatabase, connection_id: str, stream: str, type_key: str) -> JobView | None:
    """The unfinished export of this (connection, level, group, type set), if a previous run left one."""
    with db.session() as session:
        row = session.scalars(
            select(BulkJob)
            .where(
                BulkJob.connection_id == connection_id,
                BulkJob.stream == stream,
                BulkJob.type_key == type_key,
                BulkJob.status.in_(ACTIVE),
            )
            .order_by(BulkJob.requested_at.desc())
            .limit(1)
        ).first()
        return _job_view(row) if row is not None else None


def save_job(
    db: AppDatabase,
    *,
    connection_id: str,
    run_id: str,
    stream: str,
    type_key: str,
    level: str,
    group_id: str | None,
    types: list[str],
    since: datetime | None,
    kickoff_url: str,
    status_url: str,
    params: dict[str, Any],
) -> JobView:
    """Record an accepted kick-off (status ``polling``) and commit, before anything polls it (BDX-08)."""
    now = utcnow()
    row = BulkJob(
        id=uuid.uuid4().hex,
        connection_id=connection_id,
        run_id=run_id,
        stream=stream,
        type_key=type_key,
        level=level,
        group_id=group_id,
        types=types,
        since_used=since,
        kickoff_url=kickoff_url,
        status_url=status_url,
        params=params,
        requested_at=now,
        status="polling",
        updated_at=now,
    )
    with db.locked_session() as session:
        session.add(row)
        session.commit()
        return _job_view(row)


class JobMovedOnError(Exception):
    """The job is no longer in the status its recorder read (``still``): another run recorded it first."""


def _job_for_update(session: Session, job_id: str, still: str | None) -> BulkJob:
    """The job's row, locked when ``still`` asks that its status not have moved on since it was read."""
    job = session.get(BulkJob, job_id, with_for_update=still is not None)
    if job is None:
        raise LookupError(f"bulk job {job_id} vanished")
    if still is not None and job.status != still:
        raise JobMovedOnError(f"bulk job {job_id} is {job.status}, no longer {still}")
    return job


def save_manifest(
    db: AppDatabase,
    job_id: str,
    *,
    transaction_time: datetime,
    requires_access_token: bool,
    manifest: dict[str, Any],
    files: list[ManifestFile],
    still: str | None = None,
) -> None:
    """Store the manifest and one row per file, and move the job to ``downloading``, in one commit (JobMovedOnError,
    nothing stored, when ``still`` is given and the job's status is no longer it)."""
    with db.locked_session() as session:
        job = _job_for_update(session, job_id, still)
        job.transaction_time = transaction_time
        job.requires_access_token = requires_access_token
        job.manifest = manifest
        job.status = "downloading"
        job.updated_at = utcnow()
        known = set(session.scalars(select(BulkJobFile.url).where(BulkJobFile.job_id == job_id)).all())
        for f in files:
            if f.url in known:
                continue
            known.add(f.url)
            session.add(
                BulkJobFile(
                    job_id=job_id,
                    kind=f.kind,
                    resource_type=f.resource_type,
                    url=f.url,
                    expected_count=f.count,
                    state="pending",
                    rows=0,
                    bytes=0,
                    quarantined=0,
                    attempts=0,
                    updated_at=utcnow(),
                )
            )
        session.commit()


def set_job_status(
    db: AppDatabase, job_id: str, status: str, error: str | None = None, *, still: str | None = None
) -> None:
    """Set the job's status (JobMovedOnError, nothing changed, when ``still`` is given and the status is no longer
    it)."""
    with db.locked_session() as session:
        job = _job_for_update(session, job_id, still)
        job.status = status
        job.error = error
        job.updated_at = utcnow()
        session.commit()


def unfinished_files(db: AppDatabase, job_id: str) -> list[FileView]:
    """Files not yet ``done``, in manifest order (a ``landed`` one only needs its upsert)."""
    with db.session() as session:
        rows = session.scalars(
            select(BulkJobFile)
            .where(BulkJobFile.job_id == job_id, BulkJobFile.state != "done")
            .order_by(BulkJobFile.id)
        ).all()
        return [_file_view(r) for r in rows]


def all_files(db: AppDatabase, job_id: str) -> list[FileView]:
    with db.session() as session:
        rows = session.scalars(select(BulkJobFile).where(BulkJobFile.job_id == job_id).order_by(BulkJobFile.id)).all()
        return [_file_view(r) for r in rows]


def update_file(db: AppDatabase, file_id: int, **fields: Any) -> None:
    """Set columns of one file row and commit (``state``, ``landed_path``, ``rows``, ``error``, ...)."""
    with db.locked_session() as session:
        row = session.get(BulkJobFile, file_id)
        if row is None:
            raise LookupError(f"bulk file {file_id} vanished")
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.commit()


def find_job(db: AppDatabase, job_id: str) -> JobView:
    with db.session() as session:
        return _job_view(job_row(session, job_id))


def job_row(session: Session, job_id: str) -> BulkJob:
    """The job row inside the caller's transaction (the cursor advance commits beside it)."""
    row = session.get(BulkJob, job_id)
    if row is None:
        raise LookupError(f"bulk job {job_id} vanished")
    return row


#: An ``error`` file row whose outcomes report failures keeps the types it names in its ``error`` column; an
#: ``output`` file that held fewer resources than the manifest's count on every attempt keeps its own type.
INCOMPLETE_PREFIX = "incomplete types: "


def incomplete_types(db: AppDatabase, job_id: str) -> list[str]:
    """Resource types the job's ``error`` files say were not (fully) exported (``*``: not attributable), and
    types whose ``output`` file stayed short of the manifest's count."""
    found: set[str] = set()
    for f in all_files(db, job_id):
        if f.error and f.error.startswith(INCOMPLETE_PREFIX):
            found.update(t for t in f.error[len(INCOMPLETE_PREFIX) :].split(",") if t)
    return sorted(found)
