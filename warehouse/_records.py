"""What the warehouse records beside the resources: bulk error outcomes (BDX-22), quarantined lines, attachments."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from warehouse._cursor import Backend, Cursor
from warehouse._outcomes import ErrorCounts, OutcomeItem, outcome_rows
from warehouse.attachments import AttachmentRef
from warehouse.errors import LandedFileError
from warehouse.landed import QUARANTINE_SCHEMA, LandedFile

__all__ = ["Records"]


class Records(Backend):
    """``fhir_errors``, ``fhir_quarantine`` and ``fhir_attachments``, each write idempotent so replays add nothing."""

    def record_errors(
        self,
        connection_id: str,
        run_id: str,
        source: str,
        outcomes: Iterable[OutcomeItem],
    ) -> ErrorCounts:
        """Store the OperationOutcomes of one bulk ``error`` file (idempotent per line); return severity counts.

        Each outcome is numbered by its place in ``outcomes`` unless it comes as ``(line number, outcome)``."""
        counts = ErrorCounts()
        now = datetime.now(UTC)
        sql = (
            "INSERT INTO fhir_errors (connection_id, run_id, source, line_number, severity, code, diagnostics, "
            f"issue_count, outcome, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            f"CAST(%s AS {self.dialect.json}), %s) ON CONFLICT DO NOTHING"
        )
        with self._write(f"errors/{connection_id}") as cur:
            batch: list[tuple[Any, ...]] = []
            for r in outcome_rows(outcomes, counts):
                batch.append(
                    (connection_id, run_id, source, r.line_number, r.severity, r.code, r.diagnostics,
                     r.issue_count, r.outcome_json, now)
                )  # fmt: skip
                if len(batch) >= 1000:
                    cur.executemany(sql, batch)
                    batch = []
            if batch:
                cur.executemany(sql, batch)
        return counts

    def record_quarantine(self, landed: LandedFile) -> int:
        """Load a landed file's quarantine Parquet into ``fhir_quarantine`` (``upsert`` already does this)."""
        if landed.quarantine_path is None:
            return 0
        with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
            return self._insert_quarantine(cur, Path(landed.quarantine_path))

    def _insert_quarantine(self, cur: Cursor, path: Path) -> int:
        if not path.is_file():
            raise LandedFileError(f"quarantine file {path} does not exist")
        pf = pq.ParquetFile(path)
        sql = (
            f"INSERT INTO fhir_quarantine ({', '.join(QUARANTINE_SCHEMA.names)}, recorded_at) "
            f"VALUES ({', '.join(['%s'] * (len(QUARANTINE_SCHEMA.names) + 1))}) ON CONFLICT DO NOTHING"
        )
        now = datetime.now(UTC)
        total = 0
        for batch in pf.iter_batches(batch_size=1000, columns=QUARANTINE_SCHEMA.names):
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            rows = [(*r, now) for r in zip(*cols, strict=True)]
            cur.executemany(sql, rows)
            total += len(rows)
        return total

    def record_attachment(self, connection_id: str, url: str, ref: AttachmentRef) -> None:
        """Remember which stored blob a DocumentReference/Binary ``url`` resolved to (joined into the view)."""
        with self._write(f"attachments/{connection_id}") as cur:
            cur.execute(
                "INSERT INTO fhir_attachments (connection_id, url, sha256, size, content_type, recorded_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (connection_id, url) DO UPDATE SET "
                "sha256 = excluded.sha256, size = excluded.size, content_type = excluded.content_type, "
                "recorded_at = excluded.recorded_at",
                (connection_id, url, ref.sha256, ref.size, ref.content_type, datetime.now(UTC)),
            )
