"""The read side of the warehouse: counts for checks and reconciliation, the analyst views, streamed queries."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warehouse._cursor import Backend, batches
from warehouse.views import VIEW_NAMES, view_statements

__all__ = ["KeyCounts", "Reads"]


@dataclass(frozen=True)
class KeyCounts:
    """``rows`` stored (tombstones included), distinct ``keys`` among them, and ``live`` (not tombstoned) rows."""

    rows: int
    keys: int
    live: int

    @property
    def duplicates(self) -> int:
        return self.rows - self.keys


def _norm(value: object) -> object:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


class Reads(Backend):
    """Queries over ``fhir_resources`` that never load a whole table into memory."""

    def live_ids(self, connection_id: str, resource_type: str) -> set[str]:
        """Ids not tombstoned (the local side of the BDX-31 reconciliation diff)."""
        out: set[str] = set()
        with self._read() as cur:
            cur.execute(
                "SELECT id FROM fhir_resources WHERE connection_id = %s AND resource_type = %s AND deleted_at IS NULL",
                (connection_id, resource_type),
            )
            for batch in batches(cur):
                out.update(r[0] for r in batch)
        return out

    def key_counts(self, connection_id: str, resource_type: str | None = None) -> KeyCounts:
        """Rows, distinct keys and live rows of a connection (one type, or all): rows == keys is the BDX-24 key
        holding (on DuckDB nothing but the merge itself enforces it). Counted in SQL, never loaded into memory."""
        scope, params = "connection_id = %s", [connection_id]
        if resource_type is not None:
            scope, params = scope + " AND resource_type = %s", [*params, resource_type]
        with self._read() as cur:
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NULL), "
                f"(SELECT count(*) FROM (SELECT DISTINCT resource_type, id FROM fhir_resources WHERE {scope}) k) "
                f"FROM fhir_resources WHERE {scope}",
                (*params, *params),
            )
            row = cur.fetchone()
        rows, live, keys = (int(v) for v in row) if row else (0, 0, 0)
        return KeyCounts(rows=rows, keys=keys, live=live)

    def refresh_flat_tables(self) -> list[str]:
        """(Re)create the analyst views; returns their names. Dropped in reverse order: PostgreSQL refuses to drop
        a view another one reads (``patient_link`` reads ``patient_identifier``)."""
        with self._write("views") as cur:
            for name in reversed(VIEW_NAMES):
                cur.execute(f'DROP VIEW IF EXISTS "{name}"')
            for stmt in view_statements(self.dialect):
                cur.execute(stmt)
        return list(VIEW_NAMES)

    def summary(self) -> list[dict[str, Any]]:
        """Live and deleted counts per (connection, resource type)."""
        with self._read() as cur:
            cur.execute(
                "SELECT connection_id, resource_type, count(*) FILTER (WHERE deleted_at IS NULL), "
                "count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM fhir_resources "
                "GROUP BY connection_id, resource_type ORDER BY connection_id, resource_type"
            )
            return [
                {"connection_id": c, "resource_type": t, "live": int(live), "deleted": int(dead)}
                for batch in batches(cur)
                for c, t, live, dead in batch
            ]

    def row_fingerprint(self) -> str:
        """sha256 over every row of ``fhir_resources`` in key order (content hash standing in for the JSON),
        including ``landed_at``: a replay that rewrites nothing leaves it identical."""
        digest = hashlib.sha256()
        with self._read() as cur:
            cur.execute(
                "SELECT connection_id, resource_type, id, tenant_id, version_id, last_updated, deleted_at, "
                "content_hash, landed_at, source, run_id, transaction_time FROM fhir_resources "
                "ORDER BY connection_id, resource_type, id"
            )
            for batch in batches(cur):
                for row in batch:
                    digest.update(repr(tuple(_norm(v) for v in row)).encode())
                    digest.update(b"\n")
        return digest.hexdigest()

    def iter_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Stream a read-only query's rows as dicts (``%s`` placeholders), in batches, for analysts and the demo."""
        with self._read() as cur:
            cur.execute(sql, params)
            names = cur.column_names()
            for batch in batches(cur):
                for row in batch:
                    yield dict(zip(names, row, strict=True))
