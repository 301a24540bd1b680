"""The DuckDB merge of one landed file (or one chunk of it) into the unkeyed ``fhir_resources`` (BDX-24).

The staging table holds keys, bookkeeping and each winner's content hash, never the resource JSON: the JSON goes
once, straight from the landing Parquet into ``fhir_resources``, joined to the chosen rows by file row number, or,
on a first load where the stage is every row of the file, read from the file with no join at all. Materializing
the JSON in a temporary table first cost a third of the merge and most of its memory (docs/PERFORMANCE.md, issue
14).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _rows_of(hashed: bool) -> str:
    """The staged columns of each Parquet row, its hash read (``hashed``, LANDING_FILE_SCHEMA) or computed."""
    return f"{', '.join(_KEPT)}, {'content_hash' if hashed else _HASH} AS content_hash"


def _stage(cur: DuckCursor, path: Path, rows: tuple[int, int] | None, *, hashed: bool) -> bool:
    """``_stage``: one row per id (its winner), with ``content_hash`` and ``file_row_number``, no JSON. A file
    landed with its hashes (``hashed``) is not hashed again: DuckDB's sha256 over the JSON was most of the stage's
    time (docs/PERFORMANCE.md). Returns True when the stage is every row of the whole file (no id repeats), so a
    first load may append straight from the file."""
    rows_of = f"SELECT {_rows_of(hashed)}, file_row_number FROM {_PARQUET}"
    if rows is not None:  # one chunk: only the rows that win over the whole file (stage_winners)
        chosen = (
            f"SELECT p.* FROM ({rows_of} WHERE {_range(rows)}) p SEMI JOIN _winners w ON "
            "p.connection_id = w.connection_id AND p.resource_type = w.resource_type AND p.id = w.id "
            "AND p.file_row_number = w.file_row_number"
        )
        cur.execute(f"CREATE OR REPLACE TEMP TABLE _stage AS {chosen}", (str(path),))
        return False
    # The whole file: an id rarely repeats in one export file, so stage every row and pick winners only if one
    # does (a window over every row cost more than the rest of the stage, docs/PERFORMANCE.md).
    cur.execute(f"CREATE OR REPLACE TEMP TABLE _stage AS {rows_of}", (str(path),))
    cur.execute("SELECT count(*) - count(DISTINCT id) FROM _stage")
    repeats = cur.fetchone()
    if not repeats or not repeats[0]:
        return True
    cur.execute(
        "DELETE FROM _stage WHERE file_row_number IN (SELECT file_row_number FROM (SELECT file_row_number, "
        f"row_number() OVER (PARTITION BY connection_id, resource_type, id {_WINNER_ORDER}) AS _rn FROM _stage) "
        "WHERE _rn > 1)"
    )
    return False


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


def _append_file_sql(hashed: bool) -> str:
    """Append every row of the file as it is: a first load whose stage is the whole file (no join to the stage,
    which cost about a third of the append). Params: landed_at, path."""
    cols = ", ".join((*_KEPT, "content_hash"))  # the order ``_rows_of`` selects them in
    return (
        f"INSERT INTO fhir_resources ({cols}, resource, landed_at, deleted_at) "
        f"SELECT {_rows_of(hashed)}, CAST(resource_json AS JSON), CAST(%s AS TIMESTAMPTZ), NULL FROM {_PARQUET}"
    )


def merge_chunk(
    cur: DuckCursor,
    landed: LandedFile,
    rows: tuple[int, int] | None,
    *,
    hashed: bool,
    slices: Sequence[tuple[int, int]],
) -> tuple[int, int, int]:
    """Merge file rows ``[start, stop)`` (all when None) under the newer-or-equal rule; returns (inserted,
    updated, distinct). The stored side is filtered to the file's (connection, type), so DuckDB's zone maps skip
    the other row groups; the key is kept unique by this merge (one writer under the file lock). An append joined
    to the stage runs one statement per slice of ``slices`` (``_duckdb_io.append_slices`` of the chunk), which
    bounds its memory by bytes whatever the size of the resources."""
    path = str(landed.path)
    whole_file = _stage(cur, Path(path), rows, hashed=hashed)
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
        landed_at = datetime.now(UTC)  # one stamp for the chunk, however many statements append it
        every = inserted == distinct  # a first load: nothing stored to compare, append the stage as is
        if every and whole_file:
            cur.execute(_append_file_sql(hashed), (landed_at, path))
            return inserted, updated, distinct
        # The hash join must build on the narrow stage and stream the Parquet JSON past it: left to itself, DuckDB
        # built on the Parquet side (equal row counts) and held the chunk's JSON, which did not fit in 64 MB.
        with temporary_setting(
            cur.conn, "SET disabled_optimizers = 'build_side_probe_side'", "RESET disabled_optimizers"
        ):
            for part in slices:
                cur.execute(_append_sql(part, every_staged_row=every), (landed_at, path))
    return inserted, updated, distinct
