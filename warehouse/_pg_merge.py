"""One PostgreSQL merge chunk: COPY Arrow batches into a temp staging table, then one guarded upsert.

The staging table keeps the resource as text and its content hash (computed here, on the client, while the
server stores the previous batch): the upsert looks the staged keys up first and casts to JSONB only the rows the
BDX-24 ``newer`` predicate lets through, so an unchanged row is never parsed as JSON. The same predicate guards
``ON CONFLICT DO UPDATE``, and ``RETURNING`` reports exactly the rows written: created when the new row version
has no locking transaction (``xmax = 0``), updated otherwise.

COPY's text format is built column-wise by Arrow (timestamps travel as epoch microseconds, the cheapest text
Arrow makes of them); it measured faster than psycopg's binary ``write_row`` here (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from warehouse import _sql
from warehouse._hashes import content_hashes, value_offsets
from warehouse.landed import LANDING_SCHEMA

__all__ = [
    "KEYS",
    "STAGE",
    "PreparedChunk",
    "changed_sql",
    "content_hashes",
    "create_tables_sql",
    "merge_chunk",
    "merge_sql",
    "prepare_chunk",
    "prepared_chunks",
    "text_payload",
]

STAGE = "_pg_stage"
KEYS = "_pg_keys"
_COLUMNS = (*LANDING_SCHEMA.names, "content_hash")
# What classifying a row needs (``_sql.newer_predicate``); the hash comes last (``merge_chunk`` appends it).
_KEY_COLUMNS = ("pos", "id", "last_updated", "version_id", "transaction_time", "content_hash")
_TIMESTAMPS = tuple(f.name for f in LANDING_SCHEMA if pa.types.is_timestamp(f.type))
# Text COPY escapes (https://www.postgresql.org/docs/current/sql-copy.html); the backslash always, the rest
# only in a column that holds one (JSON text never does unless its producer left raw whitespace in it).
_CONTROLS = (("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_EPOCH = "CAST('1970-01-01 00:00:00+00' AS TIMESTAMPTZ)"
# Rows per piece of a staging COPY (~2-4 MB of typical resource JSON).
_COPY_SLICE_ROWS = 4_096


def create_tables_sql() -> list[str]:
    """The session's staging tables, emptied by every commit (created once per connection)."""
    cols = ", ".join(f"{c} {'bigint' if c in _TIMESTAMPS else 'text'}" for c in _COLUMNS)
    keys = ", ".join(f"{c} {'bigint' if c in (*_TIMESTAMPS, 'pos') else 'text'}" for c in _KEY_COLUMNS)
    return [
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ({cols}) ON COMMIT DELETE ROWS",
        f"CREATE TEMP TABLE IF NOT EXISTS {KEYS} ({keys}) ON COMMIT DELETE ROWS",
    ]


def _as_timestamps(table: str, columns: tuple[str, ...]) -> str:
    """``table`` with its epoch-microsecond columns as timestamps again."""
    cols = ", ".join(f"{_EPOCH} + {c} * INTERVAL '1 microsecond' AS {c}" if c in _TIMESTAMPS else c for c in columns)
    return f"(SELECT {cols} FROM {table})"


def changed_sql() -> str:
    """Positions of the chunk's keys that are new or newer than the stored row. Params: connection_id, type."""
    return (
        f"SELECT k.pos FROM {_as_timestamps(KEYS, _KEY_COLUMNS)} k LEFT JOIN fhir_resources e "
        "ON e.connection_id = %s AND e.resource_type = %s AND e.id = k.id "
        f"WHERE e.id IS NULL OR {_sql.newer_predicate('k', 'e')} ORDER BY k.pos"
    )


def merge_sql() -> str:
    """Write the staged rows under the guarded upsert; one row (created, updated). ``%s`` = landed_at."""
    cols = ", ".join(_sql.STAGE_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _sql.STAGE_COLUMNS if c not in _sql.KEY)
    return (
        f"WITH written AS (INSERT INTO fhir_resources ({cols}, resource, landed_at, deleted_at) "
        f"SELECT {cols}, CAST(resource_json AS JSONB), CAST(%s AS TIMESTAMPTZ), NULL "
        f"FROM {_as_timestamps(STAGE, _COLUMNS)} s "
        f"ON CONFLICT ({', '.join(_sql.KEY)}) DO UPDATE SET {updates}, resource = excluded.resource, "
        "landed_at = excluded.landed_at, deleted_at = NULL "
        f"WHERE {_sql.newer_predicate('excluded', 'fhir_resources')} "
        "RETURNING (xmax = 0) AS created) "
        "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM written"
    )


def _text_field(column: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        text = column.cast(pa.int64()).cast(pa.string())
    else:
        text = pc.replace_substring(column.cast(pa.string()), "\\", "\\\\")
        if pc.any(pc.match_substring_regex(text, "[\t\n\r]")).as_py():
            for old, new in _CONTROLS:
                text = pc.replace_substring(text, old, new)
    return text.fill_null("\\N")


def text_payload(columns: list[pa.Array]) -> memoryview:
    """Rows in COPY's text format, built column-wise by Arrow (no Python loop per row)."""
    fields = [_text_field(c) for c in columns]
    lines = pc.binary_join_element_wise(*fields, "\t")
    lines = pc.binary_join_element_wise(lines, pa.scalar("\n"), "")
    offsets = value_offsets(lines)
    data = lines.buffers()[2]
    assert data is not None
    return memoryview(data)[offsets[0] : offsets[-1]]


def _copy(cur: psycopg.Cursor[Any], table: str, names: tuple[str, ...], columns: list[pa.Array]) -> None:
    """COPY ``columns`` a slice of rows at a time: the server parses one slice while the client encodes the next."""
    with cur.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
        for start in range(0, len(columns[0]), _COPY_SLICE_ROWS):
            copy.write(text_payload([c.slice(start, _COPY_SLICE_ROWS) for c in columns]))


def temp_buffers_mib(chunk_bytes: int) -> int:
    """Session memory for temp tables that holds one staged chunk (text plus row overhead) without spilling."""
    return max(8, min(1024, 2 * -(-chunk_bytes // (1024 * 1024))))


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk with what its classification sends, built on the client before the server is asked anything, so
    the next chunk can be prepared while the server works on this one (``postgres_backend``)."""

    rows: pa.Table  # landing columns, one row per id, all of one (connection, type)
    hashes: pa.Array  # the content hash of each row
    keys: memoryview  # the rows' keys as COPY text of ``_KEY_COLUMNS``


def prepare_chunk(batches: Iterable[pa.RecordBatch], phases: dict[str, float]) -> PreparedChunk:
    """Read a chunk's batches into one table, take its content hashes (the ones landing computed; a file landed
    before that column is hashed here) and encode its keys (position, id, lastUpdated, versionId, transaction
    time, hash) as COPY text."""
    started = time.perf_counter()
    rows = pa.Table.from_batches(list(batches)).combine_chunks()  # at most upsert_chunk_bytes of JSON
    landed = "content_hash" in rows.column_names
    hashes = rows.column("content_hash").chunk(0) if landed else content_hashes(rows.column("resource_json").chunk(0))
    keys = [pa.array(range(rows.num_rows), type=pa.int64())]
    keys += [rows.column(c).chunk(0) for c in _KEY_COLUMNS[1:-1]] + [hashes]
    prepared = PreparedChunk(rows, hashes, text_payload(keys))
    phases["read"] += time.perf_counter() - started
    return prepared


def prepared_chunks(
    chunks: Generator[Iterable[pa.RecordBatch], None, None], phases: dict[str, float]
) -> Iterator[PreparedChunk]:
    """``chunks`` prepared one by one. Closing this closes ``chunks`` too, so the thread that reads the file
    (``one_ahead``'s producer) also closes it when the caller leaves early: nothing of it stays with the error."""
    with contextlib.closing(chunks):
        for batches in chunks:
            yield prepare_chunk(batches, phases)


def merge_chunk(
    cur: psycopg.Cursor[Any],
    chunk: PreparedChunk,
    scope: tuple[str, str],
    landed_at: datetime,
    phases: dict[str, float],
) -> tuple[int, int]:
    """Upsert one prepared chunk of ``scope`` = (connection, type); (created, updated).

    First only the keys travel and the server names the rows that are new or newer; then only those rows travel
    whole and are upserted. An unchanged row's JSON is never sent, staged or parsed. Each key is looked up in the
    primary-key index (a nested loop): the planner otherwise hashes the chunk and scans the whole table once per
    chunk, or, with statistics stale after a large load, scans the table once per key (docs/PERFORMANCE.md)."""
    started = time.perf_counter()
    with cur.copy(f"COPY {KEYS} ({', '.join(_KEY_COLUMNS)}) FROM STDIN") as copy:
        copy.write(chunk.keys)
    for plan in ("hashjoin", "mergejoin", "material", "seqscan"):  # the temp table is still scanned (no index)
        cur.execute(f"SET LOCAL enable_{plan} = off")
    cur.execute("SET LOCAL jit = off")  # compiling the predicate costs more than a chunk saves
    cur.execute(changed_sql(), scope)
    positions = pa.array([r[0] for r in cur.fetchall()], type=pa.int64())
    classified = time.perf_counter()
    phases["classify"] += classified - started
    if not len(positions):
        return 0, 0
    rows = [chunk.rows.column(c).chunk(0).take(positions) for c in LANDING_SCHEMA.names]
    _copy(cur, STAGE, _COLUMNS, [*rows, chunk.hashes.take(positions)])
    cur.execute(merge_sql(), (landed_at,))
    row = cur.fetchone()
    assert row is not None
    phases["write"] += time.perf_counter() - classified
    return int(row[0]), int(row[1])
