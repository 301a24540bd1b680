"""The DuckDB merge of one landed file (or one chunk of it) into the unkeyed ``fhir_resources`` (BDX-24).

The staging table holds keys, bookkeeping and each winner's content hash, never the resource JSON: the JSON goes
once, straight from the landing Parquet into ``fhir_resources``, joined to the chosen rows by file row number.
Materializing the JSON in a temporary table first cost a third of the merge and most of its memory
(docs/PERFORMANCE.md, issue 14).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from warehouse import _sql
from warehouse._duckdb_io import DuckCursor, temporary_setting
from warehouse.errors import LandedFileError
from warehouse.landed import LandedFile

__all__ = ["merge_chunk", "stage_winners"]

# BDX-24 within one file: the newest lastUpdated wins, then the later line.
_WINNER_ORDER = "ORDER BY last_updated DESC NULLS LAST, file_row_number DESC"
_PARQUET = "read_parquet(%s, file_row_number = true)"
# Staged columns: the landing columns but the JSON, its hash, and where the row is in the file.
_KEPT = tuple(c for c in _sql.STAGE_COLUMNS if c != "content_hash")
_HASH = _sql.DUCKDB.hash_expr("resource_json")


def _range(rows: tuple[int, int] | None) -> str:
    if rows is None:
        return "TRUE"
    return f"file_row_number >= {int(rows[0])} AND file_row_number < {int(rows[1])}"


def stage_winners(cur: DuckCursor, path: Path) -> None:
    """``_winners``: the file row that wins each id over the whole file, so that each chunk of a file split into
    chunks stages only winners. Only the key and ordering columns are read (Parquet projection)."""
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _winners AS SELECT connection_id, resource_type, id, file_row_number "
        "FROM (SELECT connection_id, resource_type, id, file_row_number, row_number() OVER ("
        f"PARTITION BY connection_id, resource_type, id {_WINNER_ORDER}) AS _rn FROM {_PARQUET}) WHERE _rn = 1",
        (str(path),),
    )


def _stage(cur: DuckCursor, path: Path, rows: tuple[int, int] | None, *, hashed: bool) -> None:
    """``_stage``: one row per id (its winner), with ``content_hash`` and ``file_row_number``, no JSON. A file
    landed with its hashes (``hashed``, LANDING_FILE_SCHEMA) is not hashed again: DuckDB's sha256 over the JSON was
    most of the stage's time (docs/PERFORMANCE.md)."""
    cols = ", ".join(_KEPT)
    rows_of = f"SELECT {cols}, {'content_hash' if hashed else _HASH} AS content_hash, file_row_number FROM {_PARQUET}"
    if rows is None:  # the whole file: pick each id's winner right here (the window never carries the JSON)
        chosen = (
            f"SELECT {cols}, content_hash, file_row_number FROM (SELECT *, row_number() OVER (PARTITION BY "
            f"connection_id, resource_type, id {_WINNER_ORDER}) AS _rn FROM ({rows_of})) WHERE _rn = 1"
        )
    else:  # one chunk: only the rows that win over the whole file (stage_winners)
        chosen = (
            f"SELECT p.* FROM ({rows_of} WHERE {_range(rows)}) p SEMI JOIN _winners w ON "
            "p.connection_id = w.connection_id AND p.resource_type = w.resource_type AND p.id = w.id "
            "AND p.file_row_number = w.file_row_number"
        )
    cur.execute(f"CREATE OR REPLACE TEMP TABLE _stage AS {chosen}", (str(path),))


def _check_scope(cur: DuckCursor, landed: LandedFile) -> None:
    cur.execute(
        "SELECT count(*) FROM _stage WHERE connection_id <> %s OR resource_type <> %s",
        (landed.connection_id, landed.resource_type),
    )
    row = cur.fetchone()
    if row and row[0]:
        raise LandedFileError(
            f"landed file {landed.path} holds rows of another connection or resource type than "
            f"{landed.connection_id}/{landed.resource_type}"
        )


def _append_sql(rows: tuple[int, int] | None, *, every_staged_row: bool) -> str:
    """Append the changed staged rows (all of them on a first load) with their JSON read from the Parquet file.
    Params: landed_at, path."""
    cols = ", ".join(_sql.STAGE_COLUMNS)
    picked = ", ".join(f"s.{c}" for c in _sql.STAGE_COLUMNS)
    changed = "" if every_staged_row else " AND s.id IN (SELECT id FROM _changes)"
    return (
        f"INSERT INTO fhir_resources ({cols}, resource, landed_at, deleted_at) "
        f"SELECT {picked}, CAST(p.resource_json AS JSON), CAST(%s AS TIMESTAMPTZ), NULL "
        f"FROM (SELECT resource_json, file_row_number FROM {_PARQUET} WHERE {_range(rows)}) p "
        f"JOIN _stage s ON p.file_row_number = s.file_row_number WHERE TRUE{changed}"
    )


def merge_chunk(
    cur: DuckCursor, landed: LandedFile, rows: tuple[int, int] | None, *, hashed: bool
) -> tuple[int, int, int]:
    """Merge file rows ``[start, stop)`` (all when None) under the newer-or-equal rule; returns (inserted,
    updated, distinct). The stored side is filtered to the file's (connection, type), so DuckDB's zone maps skip
    the other row groups; the key is kept unique by this merge (one writer under the file lock)."""
    path = str(landed.path)
    _stage(cur, Path(path), rows, hashed=hashed)
    _check_scope(cur, landed)
    scope = (landed.connection_id, landed.resource_type)
    cur.execute(_sql.changes_sql(), scope)
    cur.execute(
        "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new), "
        "(SELECT count(*) FROM _stage) FROM _changes"
    )
    counts = cur.fetchone()
    assert counts is not None
    inserted, updated, distinct = (int(c) for c in counts)
    if updated:
        cur.execute(_sql.delete_replaced_sql(), scope)
    if inserted or updated:
        every = inserted == distinct  # a first load: nothing stored to compare, append the stage as is
        # The hash join must build on the narrow stage and stream the Parquet JSON past it: left to itself, DuckDB
        # built on the Parquet side (equal row counts) and held the chunk's JSON, which did not fit in 64 MB.
        with temporary_setting(
            cur.conn, "SET disabled_optimizers = 'build_side_probe_side'", "RESET disabled_optimizers"
        ):
            cur.execute(_append_sql(rows, every_staged_row=every), (datetime.now(UTC), path))
    return inserted, updated, distinct
