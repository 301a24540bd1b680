"""SQL shared by the DuckDB and PostgreSQL warehouses, rendered per dialect.

One text for both backends keeps BDX-24 identical on each: the same ``newer`` predicate classifies rows
before the write and guards the ``ON CONFLICT DO UPDATE``, so the reported counts are exactly what changed.
Placeholders are written ``%s`` (psycopg); the DuckDB backend rewrites them to ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DUCKDB", "POSTGRES", "SCHEMA_VERSION", "Dialect", "newer_predicate", "schema_ddl"]

# 1: first schema. 2: DuckDB's fhir_resources without its primary-key index (Dialect.keyed_resources).
SCHEMA_VERSION = 2
KEY = ("connection_id", "resource_type", "id")
# Every column of fhir_resources, in table order.
RESOURCE_COLUMNS = (
    "connection_id",
    "resource_type",
    "id",
    "tenant_id",
    "version_id",
    "last_updated",
    "deleted_at",
    "content_hash",
    "resource",
    "landed_at",
    "source",
    "run_id",
    "transaction_time",
)
# Columns copied from the staging table into fhir_resources; resource and landed_at are computed on the way in,
# deleted_at is cleared. Every statement names its columns, so their order here does not matter.
STAGE_COLUMNS = tuple(c for c in RESOURCE_COLUMNS if c not in ("deleted_at", "resource", "landed_at"))


@dataclass(frozen=True)
class Dialect:
    name: str
    text: str
    json: str
    blob: str
    sha256_hex: str  # format string with {x}: hex sha256 of a text expression
    # Whether fhir_resources carries its primary key as an index. PostgreSQL's B-tree makes ON CONFLICT cheap.
    # DuckDB's ART index made every upsert commit rewrite index data (half the bulk time, docs/PERFORMANCE.md);
    # there the key is kept unique by the merge itself (one writer under the file lock) and checked by the
    # duplicate-id asset check.
    keyed_resources: bool
    # How fhir_resources stores ``resource``. On DuckDB, ZSTD: appending the JSON cost ~35 % less CPU than the
    # default DICT_FSST, the file is ~4x smaller and JSON queries read it as fast (docs/PERFORMANCE.md, issue 14,
    # sixth session). A table keeps the compression it was created with.
    resource_storage: str = ""

    def hash_expr(self, expr: str) -> str:
        return self.sha256_hex.format(x=expr)


DUCKDB = Dialect(
    "duckdb",
    "VARCHAR",
    "JSON",
    "BLOB",
    "sha256({x})",
    keyed_resources=False,
    resource_storage=" USING COMPRESSION ZSTD",
)
POSTGRES = Dialect(
    "postgres", "TEXT", "JSONB", "BYTEA", "encode(sha256(convert_to({x}, 'UTF8')), 'hex')", keyed_resources=True
)


def resources_ddl(d: Dialect) -> str:
    """``fhir_resources``: one row per (connection, type, id), the JSON plus the BDX-24 bookkeeping."""
    t, ts = d.text, "TIMESTAMPTZ"
    key = f", PRIMARY KEY ({', '.join(KEY)})" if d.keyed_resources else ""
    return f"""CREATE TABLE IF NOT EXISTS fhir_resources (
            connection_id {t} NOT NULL, resource_type {t} NOT NULL, id {t} NOT NULL,
            tenant_id {t}, version_id {t}, last_updated {ts}, deleted_at {ts}, content_hash {t},
            resource {d.json}{d.resource_storage}, landed_at {ts} NOT NULL, source {t}, run_id {t},
            transaction_time {ts}{key})"""


def schema_ddl(d: Dialect) -> list[str]:
    """Idempotent DDL (``IF NOT EXISTS``) for every warehouse table."""
    t, ts = d.text, "TIMESTAMPTZ"
    return [
        f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL)",
        resources_ddl(d),
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


def version_number(v: str) -> str:
    """A ``versionId`` made only of digits, without its leading zeros (NULL for any other versionId): two of them
    compare as numbers by (length, text), with no cast that a 40-digit version could overflow."""
    return f"(CASE WHEN {v} <> '' AND ltrim({v}, '0123456789') = '' THEN ltrim({v}, '0') END)"


def winner_order(version_id: str, row: str) -> str:
    """BDX-24 among the copies of one id in one file: the newest lastUpdated, then the highest numeric versionId,
    then the later line (``row``, the file row number)."""
    number = version_number(version_id)
    return (
        f"ORDER BY last_updated DESC NULLS LAST, length({number}) DESC NULLS LAST, {number} DESC NULLS LAST, {row} DESC"
    )


def _older_version(n: str, o: str) -> str:
    """Both versionIds numeric and ``n``'s the smaller (FALSE when either is not a number: opaque ids)."""
    a, b = version_number(f"{n}.version_id"), version_number(f"{o}.version_id")
    smaller = f"(length({a}) < length({b}) OR (length({a}) = length({b}) AND {a} < {b}))"
    return f"({a} IS NOT NULL AND {b} IS NOT NULL AND {smaller})"


def newer_predicate(n: str, o: str) -> str:
    """BDX-24: is incoming row ``n`` to replace stored row ``o``?

    A tombstoned row is revived by a copy with a strictly newer ``lastUpdated`` than the deletion, or by one the
    server answered strictly after the deletion: its ``transaction_time`` (the server's time when the query that
    returned it ran: a Bulk export's ``transactionTime``, a REST search's first-page time, the BDX-27 mark, a BDX-31
    listing's time for what it reads back) is later than ``deleted_at``, a time on the same server clock (a Bulk
    ``deleted`` entry's Bundle time or the export's ``transactionTime``, or the BDX-31 listing's first-page time).
    The resource was on the server after it was deleted: re-created, or the deletion was wrong (a listing that
    missed it without saying so; an unchanged resource keeps its old ``lastUpdated``, so that rule alone never
    undid such a tombstone). Such a copy must not be older than the version the tombstone replaced (``lastUpdated``
    not before it). A copy answered at or before the deletion (an older export landed late) or with no
    ``transaction_time`` (landed before REST searches recorded one; referenced resources) revives only by
    ``lastUpdated``.
    A live row is replaced by a newer ``lastUpdated``, or an equal one (both absent counts as equal) carrying a
    different ``versionId`` or content, unless both versionIds are numbers and the incoming one is the smaller
    (bulk-data.md BDX-24: lastUpdated, then versionId), or the server answered the incoming copy before the stored
    one (both ``transaction_time`` known: an older export landed after a newer search, on a server without
    ``lastUpdated``); a row without ``lastUpdated`` never replaces one that has it. Identical replays match nothing.
    """
    same_time = f"({n}.last_updated = {o}.last_updated OR ({n}.last_updated IS NULL AND {o}.last_updated IS NULL))"
    differs = f"({n}.version_id IS DISTINCT FROM {o}.version_id OR {n}.content_hash IS DISTINCT FROM {o}.content_hash)"
    answered_before = f"COALESCE({n}.transaction_time < {o}.transaction_time, FALSE)"
    live_newer = (
        f"({n}.last_updated > {o}.last_updated"
        f" OR ({o}.last_updated IS NULL AND {n}.last_updated IS NOT NULL)"
        f" OR ({same_time} AND {differs} AND NOT {_older_version(n, o)} AND NOT {answered_before}))"
    )
    not_older = f"({o}.last_updated IS NULL OR {n}.last_updated IS NULL OR {n}.last_updated >= {o}.last_updated)"
    revives = (
        f"(({n}.last_updated > {o}.deleted_at AND ({o}.last_updated IS NULL OR {n}.last_updated > {o}.last_updated))"
        f" OR ({n}.transaction_time > {o}.deleted_at AND {not_older}))"
    )
    return f"(({o}.deleted_at IS NOT NULL AND {revives}) OR ({o}.deleted_at IS NULL AND {live_newer}))"


def tombstone_sql() -> tuple[str, str]:
    """(mark live rows deleted, insert placeholder tombstones for unknown ids); params: deleted_at x 3[, tenant, ...].

    A live row survives a deletion it postdates, judged as ``newer_predicate`` judges a revival: by a ``lastUpdated``
    after ``deleted_at``, or by a ``transaction_time`` after it (the server answered the copy after the deletion),
    so the order a copy and a deletion arrive in never decides."""
    on = " AND ".join(f"f.{k} = t.{k}" for k in KEY)
    mark = (
        "UPDATE fhir_resources AS f SET deleted_at = CAST(%s AS TIMESTAMPTZ) FROM _tomb t "
        f"WHERE {on} AND f.deleted_at IS NULL "
        "AND (f.last_updated IS NULL OR f.last_updated <= CAST(%s AS TIMESTAMPTZ)) "
        "AND (f.transaction_time IS NULL OR f.transaction_time <= CAST(%s AS TIMESTAMPTZ))"
    )
    insert = (
        "INSERT INTO fhir_resources (connection_id, resource_type, id, tenant_id, deleted_at, landed_at) "
        "SELECT t.connection_id, t.resource_type, t.id, CAST(%s AS VARCHAR), CAST(%s AS TIMESTAMPTZ), "
        "CAST(%s AS TIMESTAMPTZ) FROM _tomb t "
        f"WHERE NOT EXISTS (SELECT 1 FROM fhir_resources f WHERE {on})"
    )
    return mark, insert
