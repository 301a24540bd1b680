"""The DuckDB merge of one landed file (or one chunk of it) into the unkeyed ``fhir_resources`` (BDX-24).

Nothing of the file is copied into a table before the append: the file's rows are read straight from the landing
Parquet by each statement (Parquet projection reads only the columns a statement names), and the one temporary
table, ``_changes``, holds only the file row numbers to write and the ids they replace. A Bulk merge group keeps
one transaction open over many files, and DuckDB frees a temporary table replaced inside a transaction only at
the commit, so a stage of every row's columns (~15 MB per 50,000 resources) piled up to ~100 MB per group
(docs/PERFORMANCE.md, issue 14). The JSON goes once, from the Parquet file into ``fhir_resources``: on a first
load whose rows are all new it is read from the file with no join at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pyarrow as pa

from warehouse import _sql
from warehouse._duckdb_io import DuckCursor, temporary_setting
from warehouse.errors import InvalidInputError, LandedFileError
from warehouse.landed import LandedFile

__all__ = ["merge_chunk", "stage_ids", "stage_winners"]

# BDX-24 within one file: the newest lastUpdated wins, then the highest numeric versionId, then the later line.
_WINNER_ORDER = _sql.winner_order("version_id", "file_row_number")
_PARQUET = "read_parquet(%s, file_row_number = true)"
# The landing columns but the JSON and its hash, in ``STAGE_COLUMNS`` order.
_KEPT = tuple(c for c in _sql.STAGE_COLUMNS if c != "content_hash")
_HASH = _sql.DUCKDB.hash_expr("resource_json")
# The stored rows of one (connection, type): DuckDB's zone maps skip the other row groups. Params: both.
_ID_CHUNK = 50_000  # tombstone ids staged per statement
_STORED = "(SELECT * FROM fhir_resources WHERE connection_id = %s AND resource_type = %s)"


def stage_winners(cur: DuckCursor, path: Path) -> None:
    """``_winners``: the file row that wins each id over the whole file, for a file split into chunks or one
    whose ids repeat (both rare). Only the key and ordering columns are read (Parquet projection)."""
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _winners AS SELECT file_row_number "
        "FROM (SELECT file_row_number, row_number() OVER ("
        f"PARTITION BY connection_id, resource_type, id {_WINNER_ORDER}) AS _rn FROM {_PARQUET}) WHERE _rn = 1",
        (str(path),),
    )


def _where(rows: tuple[int, int] | None, winners: bool) -> str:
    """The file rows a statement reads: ``rows`` of the file (all when None), only the winners when ``winners``."""
    parts = ["TRUE" if rows is None else f"file_row_number >= {int(rows[0])} AND file_row_number < {int(rows[1])}"]
    if winners:
        parts.append("file_row_number IN (SELECT file_row_number FROM _winners)")
    return " AND ".join(parts)


def _hash_of(hashed: bool) -> str:
    """The row's content hash: read (``hashed``, LANDING_FILE_SCHEMA) or computed from its JSON."""
    return "content_hash" if hashed else f"{_HASH} AS content_hash"


def _build_on_the_right(cur: DuckCursor) -> contextlib.AbstractContextManager[None]:
    """DuckDB builds each hash join on the join's right side as written (its optimizer otherwise picks the side
    it estimates smaller)."""
    return temporary_setting(cur.conn, "SET disabled_optimizers = 'build_side_probe_side'", "RESET disabled_optimizers")


def _survey(cur: DuckCursor, landed: LandedFile, where: str) -> tuple[int, int]:
    """(rows, distinct ids) of the file rows ``where`` picks; refuses rows of another connection or type than the
    file's."""
    cur.execute(
        "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE connection_id IS DISTINCT FROM %s "
        f"OR resource_type IS DISTINCT FROM %s) FROM {_PARQUET} WHERE {where}",
        (landed.connection_id, landed.resource_type, str(landed.path)),
    )
    row = cur.fetchone()
    assert row is not None
    if row[2]:
        raise LandedFileError(
            f"landed file {landed.path} holds rows of another connection or resource type than "
            f"{landed.connection_id}/{landed.resource_type}"
        )
    return int(row[0]), int(row[1])


def _stage_changes(cur: DuckCursor, landed: LandedFile, where: str, *, hashed: bool) -> tuple[int, int]:
    """``_changes(file_row_number, replaces)``: the rows to write, new or newer than the stored row (BDX-24), with
    the id of the stored row each one replaces (NULL for a new id). Returns (inserted, updated)."""
    keys = (
        f"SELECT id, version_id, last_updated, transaction_time, {_hash_of(hashed)}, file_row_number "
        f"FROM {_PARQUET} WHERE {where}"
    )
    # The join builds on the file's rows (bounded by the chunk), never on the stored rows of the type (bounded
    # only by the warehouse): left to its estimates DuckDB builds on whichever side it guesses smaller, and its
    # guess of the filtered stored rows can fall under the file's (tests/warehouse/test_merge_group_memory.py).
    with _build_on_the_right(cur):
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE _changes AS SELECT s.file_row_number, e.id AS replaces "
            f"FROM {_STORED} e RIGHT JOIN ({keys}) s ON e.id = s.id "
            f"WHERE e.id IS NULL OR {_sql.newer_predicate('s', 'e')}",
            (landed.connection_id, landed.resource_type, str(landed.path)),
        )
    cur.execute("SELECT count(*) FILTER (WHERE replaces IS NULL), count(replaces) FROM _changes")
    counts = cur.fetchone()
    assert counts is not None
    return int(counts[0]), int(counts[1])


def _append_sql(hashed: bool, rows: tuple[int, int] | None) -> str:
    """Append rows with their JSON read from the Parquet file: every row of the file as it is when ``rows`` is None
    (a first load whose rows are all new: no join, which cost about a third of the append), else the rows in
    ``_changes`` among file rows ``rows``, the hash join built on the narrow ``_changes`` with the JSON streamed
    past it. Params: landed_at, path."""
    source = _PARQUET
    if rows is not None:
        source = f"(SELECT * FROM {_PARQUET} WHERE {_where(rows, winners=False)}) JOIN _changes USING (file_row_number)"
    return (
        f"INSERT INTO fhir_resources ({', '.join(_KEPT)}, content_hash, resource, landed_at, deleted_at) "
        f"SELECT {', '.join(_KEPT)}, {_hash_of(hashed)}, CAST(resource_json AS JSON), CAST(%s AS TIMESTAMPTZ), NULL "
        f"FROM {source}"
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
    updated, distinct). A chunk of a file split into chunks reads only the rows that win over the whole file
    (``stage_winners``, run by the caller before the first chunk); a whole file stages them only if an id
    repeats. The key is kept unique by this merge (one writer under the file lock). An append joined to
    ``_changes`` runs one statement per slice of ``slices`` (``_duckdb_io.append_slices`` of the chunk), which
    bounds its memory by bytes whatever the size of the resources."""
    path = str(landed.path)
    where = _where(rows, winners=rows is not None)
    count, distinct = _survey(cur, landed, where)
    if count != distinct:  # an id repeats in the file (a chunk reads only the winners, so it never gets here)
        stage_winners(cur, Path(landed.path))
        where = _where(rows, winners=True)
    inserted, updated = _stage_changes(cur, landed, where, hashed=hashed)
    if updated:
        cur.execute(
            "DELETE FROM fhir_resources WHERE connection_id = %s AND resource_type = %s "
            "AND id IN (SELECT replaces FROM _changes WHERE replaces IS NOT NULL)",
            (landed.connection_id, landed.resource_type),
        )
    if not inserted and not updated:
        return inserted, updated, distinct
    landed_at = datetime.now(UTC)  # one stamp for the chunk, however many statements append it
    if rows is None and count == distinct == inserted:  # a first load: every row of the file, as it is
        cur.execute(_append_sql(hashed, None), (landed_at, path))
        return inserted, updated, distinct
    # Left to itself, DuckDB built the join on the Parquet side (equal row counts) and held the chunk's JSON,
    # which did not fit in 64 MB.
    with _build_on_the_right(cur):
        for part in slices:
            cur.execute(_append_sql(hashed, part), (landed_at, path))
    return inserted, updated, distinct


def stage_ids(cur: DuckCursor, connection_id: str, resource_type: str, ids: Iterable[str]) -> None:
    """Stage ``ids`` in ``_tomb`` for a purge or delete: each once, in Arrow chunks (bulk, not a statement per id)."""
    cur.execute("CREATE OR REPLACE TEMP TABLE _tomb (connection_id VARCHAR, resource_type VARCHAR, id VARCHAR)")
    it = iter(ids)
    while chunk := list(islice(it, _ID_CHUNK)):
        if not all(isinstance(i, str) and i for i in chunk):
            raise InvalidInputError("tombstone ids must be non-empty strings")
        cur.conn.register("_ids_chunk", pa.table({"id": pa.array(chunk, type=pa.string())}))
        try:
            cur.conn.execute(
                "INSERT INTO _tomb SELECT DISTINCT ?, ?, c.id FROM _ids_chunk c "
                "WHERE NOT EXISTS (SELECT 1 FROM _tomb t WHERE t.id = c.id)",
                [connection_id, resource_type],
            )
        finally:
            cur.conn.unregister("_ids_chunk")
