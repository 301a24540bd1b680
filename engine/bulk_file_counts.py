"""Per-file line counts of a Bulk export, read from ``bulk_job_files`` for the BDX-20 asset check."""

from __future__ import annotations

from sqlalchemy import select

from engine.models import BulkJobFile
from pipelines.defs._shared.metadata import FileCount
from store import AppDatabase

__all__ = ["output_file_counts"]


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
