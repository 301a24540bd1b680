"""Per-file line counts of a Bulk export, read from ``bulk_job_files`` for the BDX-20 asset check."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from connectors.http import redact_url
from engine.models import BulkJobFile
from store import AppDatabase

__all__ = ["FileCount", "count_mismatch", "output_file_counts"]


@dataclass(frozen=True)
class FileCount:
    """One Bulk manifest output item as landed: the manifest's ``count`` (if any) and the lines read. ``url`` is
    the file's without its query (a storage host's signature there is a credential; checks show this url)."""

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
                url=redact_url(r.url),
                resource_type=r.resource_type,
                expected=r.expected_count,
                actual=r.rows + r.quarantined,
            )
            for r in rows
        ]


def count_mismatch(url: str, expected: int, got: int) -> str:
    """What a report says of a file whose lines differ from its manifest ``count``: the url without its query."""
    return f"{redact_url(url)}: manifest count {expected}, file had {got} lines"
