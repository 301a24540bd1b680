"""Per-file line counts of a Bulk export, read from ``bulk_job_files`` for the BDX-20 asset check."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from engine.models import BulkJobFile
from store import AppDatabase

__all__ = ["FileCount", "output_file_counts"]


@dataclass(frozen=True)
class FileCount:
    """One Bulk manifest output item as landed: the manifest's ``count`` (if any) and the lines read."""

    url: str
    resource_type: str
    expected: int | None
    actual: int


def output_file_counts(db: AppDatabase, job_id: str) -> list[FileCount]:
    """Every landed ``output`` file of the job: the manifest ``count`` and the lines read (rows + quarantined)."""
    with db.session() as session:
        rows = session.scalars(
            select(BulkJobFile)
            .where(BulkJobFile.job_id == job_id, BulkJobFile.kind == "output", BulkJobFile.state == "done")
            .order_by(BulkJobFile.id)
        ).all()
        return [
            FileCount(
                url=r.url, resource_type=r.resource_type, expected=r.expected_count, actual=r.rows + r.quarantined
            )
            for r in rows
        ]
