"""SQL shared by the DuckDB and PostgreSQL warehouses, rendered per dialect.

One text for both backends keeps BDX-24 identical on each: the same ``newer`` predicate classifies rows
before the write and guards the ``ON CONFLICT DO UPDATE``, so the reported counts are exactly what changed.
Placeholders are written ``%s`` (psycopg); the DuckDB backend rewrites them to ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DUCKDB", "POSTGRES", "SCHEMA_VERSION", "Dialect", "newer_predicate", "schema_ddl"]

SCHEMA_VERSION = 1
KEY = ("connection_id", "resource_type", "id")
# Columns copied from the staging table into fhir_resources (besides resource and landed_at).
STAGE_COLUMNS = (
    "connection_id",
    "resource_type",
    "id",
    "tenant_id",
    "version_id",
    "last_updated",
    "source",
    "run_id",
    "transaction_time",
    "content_hash",
)


@dataclass(frozen=True)
class Dialect:
    name: str
    text: str
    json: str
    blob: str
    sha256_hex: str  # format string with {x}: hex sha256 of a text expression

    def hash_expr(self, expr: str) -> str:
        return self.sha256_hex.format(x=expr)


DUCKDB = Dialect("duckdb", "VARCHAR", "JSON", "BLOB", "sha256({x})")
POSTGRES = Dialect("postgres", "TEXT", "JSONB", "BYTEA", "encode(sha256(convert_to({x}, 'UTF8')), 'hex')")


def schema_ddl(d: Dialect) -> list[str]:
    """Idempotent DDL (``IF NOT EXISTS``) for every warehouse table."""
    t, ts = d.text, "TIMESTAMPTZ"
    return [
        f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS fhir_resources (
            connection_id {t} NOT NULL, resource_type {t} NOT NULL, id {t} NOT NULL,
            tenant_id {t}, version_id {t}, last_updated {ts}, deleted_at {ts}, content_hash {t},
            resource {d.json}, landed_at {ts} NOT NULL, source {t}, run_id {t}, transaction_time {ts},
            PRIMARY KEY (connection_id, resource_type, id))""",
        f"""CREATE TABLE IF NOT EXISTS fhir_errors (
            connection_id {t} NOT NULL, run_id {t} NOT NULL, source {t} NOT NULL, line_number BIGINT NOT NULL,
            severity {t}, code {t}, diagnostics {t}, issue_count INTEGER NOT NULL, outcome {d.json},
            recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, run_id, source, line_number))""",
        f"""CREATE TABLE IF NOT EXISTS fhir_quarantine (
            tenant_id {t}, connection_id {t} NOT NULL, resource_type {t} NOT NULL, run_id {t} NOT NULL,
            source {t} NOT NULL, line_number BIGINT NOT NULL, error {t} NOT NULL, raw_line {d.blob},
            recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, resource_type, run_id, source, line_number))""",
        f"""CREATE TABLE IF NOT EXISTS fhir_attachments (
            connection_id {t} NOT NULL, url {t} NOT NULL, sha256 {t} NOT NULL, size BIGINT NOT NULL,
            content_type {t}, recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, url))""",
    ]


def newer_predicate(n: str, o: str) -> str:
    """BDX-24: is incoming row ``n`` to replace stored row ``o``?

    A tombstoned row is revived only by a strictly newer ``lastUpdated`` than the deletion. A live row is
    replaced by a newer ``lastUpdated``, or an equal one carrying a different ``versionId`` or content; a
    row without ``lastUpdated`` never replaces one that has it. Identical replays match nothing.
    """
    same_time = f"({n}.last_updated = {o}.last_updated OR ({n}.last_updated IS NULL AND {o}.last_updated IS NULL))"
    differs = f"({n}.version_id IS DISTINCT FROM {o}.version_id OR {n}.content_hash IS DISTINCT FROM {o}.content_hash)"
    live_newer = (
        f"({n}.last_updated > {o}.last_updated"
        f" OR ({o}.last_updated IS NULL AND {n}.last_updated IS NOT NULL)"
        f" OR ({same_time} AND {differs}))"
    )
    return (
        f"(({o}.deleted_at IS NOT NULL AND {n}.last_updated > {o}.deleted_at"
        f" AND ({o}.last_updated IS NULL OR {n}.last_updated > {o}.last_updated))"
        f" OR ({o}.deleted_at IS NULL AND {live_newer}))"
    )


def classify_sql() -> str:
    """Counts (inserted, updated, distinct) of the staged rows against the current table."""
    on = " AND ".join(f"e.{k} = s.{k}" for k in KEY)
    return (
        "SELECT count(*) FILTER (WHERE e.id IS NULL), "
        f"count(*) FILTER (WHERE e.id IS NOT NULL AND {newer_predicate('s', 'e')}), count(*) "
        f"FROM _stage s LEFT JOIN fhir_resources e ON {on}"
    )


def upsert_sql(d: Dialect) -> str:
    """The guarded upsert of the staged rows; ``%s`` is the landed_at timestamp."""
    cols = ", ".join(STAGE_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in STAGE_COLUMNS if c not in KEY)
    return (
        f"INSERT INTO fhir_resources ({cols}, resource, landed_at, deleted_at) "
        f"SELECT {cols}, CAST(resource_json AS {d.json}), CAST(%s AS TIMESTAMPTZ), NULL FROM _stage "
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates}, resource = excluded.resource, "
        f"landed_at = excluded.landed_at, deleted_at = NULL "
        f"WHERE {newer_predicate('excluded', 'fhir_resources')}"
    )


def tombstone_sql() -> tuple[str, str]:
    """(mark live rows deleted, insert placeholder tombstones for unknown ids); params: deleted_at[, tenant, ...]."""
    on = " AND ".join(f"f.{k} = t.{k}" for k in KEY)
    mark = (
        "UPDATE fhir_resources AS f SET deleted_at = CAST(%s AS TIMESTAMPTZ) FROM _tomb t "
        f"WHERE {on} AND f.deleted_at IS NULL "
        "AND (f.last_updated IS NULL OR f.last_updated <= CAST(%s AS TIMESTAMPTZ))"
    )
    insert = (
        "INSERT INTO fhir_resources (connection_id, resource_type, id, tenant_id, deleted_at, landed_at) "
        "SELECT t.connection_id, t.resource_type, t.id, CAST(%s AS VARCHAR), CAST(%s AS TIMESTAMPTZ), "
        "CAST(%s AS TIMESTAMPTZ) FROM _tomb t "
        f"WHERE NOT EXISTS (SELECT 1 FROM fhir_resources f WHERE {on})"
    )
    return mark, insert
