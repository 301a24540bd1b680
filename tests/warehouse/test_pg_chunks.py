"""PostgreSQL merges a landed file in chunks sized by bytes (warehouse/_pg_chunks.py, _pg_merge.py).

Chunk boundaries fall inside Arrow batches, a resource larger than the budget is a chunk of its own, counts stay
exact for new/updated/unchanged/older rows and in-file duplicates spread over chunks, and a failure mid-file
leaves only whole committed chunks, which a replay completes to the state of a clean merge.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pgserver import PgServer, create_database
from tests.warehouse.conftest import resource
from warehouse import LandedFile, _pg_chunks, _pg_merge, read_landed_file
from warehouse._pg_chunks import BATCH_ROWS, byte_chunks, check_keys, losing_rows
from warehouse.errors import LandedFileError
from warehouse.landed import LANDING_SCHEMA
from warehouse.postgres_backend import PostgresWarehouse, psycopg_conninfo

pytestmark = pytest.mark.postgres
T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"


def _write(path: Path, docs: list[dict[str, Any]], texts: dict[int, str] | None = None) -> LandedFile:
    """A landed file written directly (``texts`` replaces a row's JSON text, e.g. with one PostgreSQL refuses)."""
    texts = texts or {}
    lu = [datetime.fromisoformat(d["meta"]["lastUpdated"]) for d in docs]
    table = pa.table(
        {
            "tenant_id": ["t1"] * len(docs),
            "connection_id": ["c1"] * len(docs),
            "resource_type": ["Observation"] * len(docs),
            "id": [d["id"] for d in docs],
            "last_updated": lu,
            "version_id": [d["meta"]["versionId"] for d in docs],
            "source": ["s"] * len(docs),
            "transaction_time": [datetime(2026, 3, 1, tzinfo=UTC)] * len(docs),
            "run_id": ["r1"] * len(docs),
            "resource_json": [texts.get(i, orjson.dumps(d).decode()) for i, d in enumerate(docs)],
        },
        schema=LANDING_SCHEMA,
    )
    pq.write_table(table, path)
    return read_landed_file(path)


def _rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        return conn.execute(
            "SELECT id, version_id, last_updated, content_hash, resource, deleted_at FROM fhir_resources ORDER BY id"
        ).fetchall()


def _padded(rid: str, lu: str = T1, version: str = "1", size: int = 200, **fields: Any) -> dict[str, Any]:
    return resource(rid, lu, version, note="x" * size, **fields)


def test_chunks_cut_inside_a_batch_and_a_large_resource_is_a_chunk_of_its_own(tmp_path: Path) -> None:
    docs = [_padded(f"o{i}") for i in range(9)] + [_padded("big", size=5_000)] + [_padded(f"p{i}") for i in range(3)]
    landed = _write(tmp_path / "f.parquet", docs)
    assert landed.rows < BATCH_ROWS  # one Arrow batch: every boundary below falls inside it
    budget = 3 * len(orjson.dumps(docs[0]))
    chunks = [pa.Table.from_batches(list(c)) for c in byte_chunks(Path(landed.path), budget, [])]
    ids = [c.column("id").to_pylist() for c in chunks]
    assert ids == [["o0", "o1", "o2"], ["o3", "o4", "o5"], ["o6", "o7", "o8"], ["big"], ["p0", "p1", "p2"]]
    for chunk in chunks[:3] + chunks[4:]:
        assert sum(len(s) for s in chunk.column("resource_json").to_pylist()) <= budget


def test_losing_rows_are_chosen_over_the_whole_file(tmp_path: Path) -> None:
    docs = [_padded("a", T2), _padded("b"), _padded("a", T1), _padded("c"), _padded("b", T1, "2"), _padded("d")]
    landed = _write(tmp_path / "f.parquet", docs)
    # a: the T2 copy (row 0) beats the later, older one; b: equal lastUpdated, the later line (row 4) wins
    assert losing_rows(Path(landed.path)) == [1, 2]


@pytest.fixture
def two_urls(pg_server: PgServer) -> tuple[str, str]:
    return tuple(create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}") for _ in range(2))  # type: ignore[return-value]


def test_counts_are_exact_across_chunk_boundaries(tmp_path: Path, two_urls: tuple[str, str]) -> None:
    chunked_url, whole_url = two_urls
    stored = _write(tmp_path / "stored.parquet", [_padded(f"a{i}") for i in range(10)])
    batch = _write(
        tmp_path / "batch.parquet",
        [
            _padded("n2", T1, "1"),  # duplicate: loses to the newer T2 copy further down
            _padded("a4", T3, "3"),  # duplicate: the newest copy, wins over the later T2 one
            _padded("a0"),  # identical replay: unchanged
            _padded("a1", T2, "2"),  # newer: updated
            _padded("a2", "2025-12-01T00:00:00Z", "0"),  # older: ignored, unchanged
            _padded("a3", T1, "1", status="amended"),  # same time and version, other content: updated
            _padded("n0"),
            _padded("n1"),
            _padded("n2", T2, "2"),
            _padded("a4", T2, "2"),
        ],
    )
    budget = 2 * len(orjson.dumps(_padded("a0")))  # about two resources per chunk: five transactions
    assert len(list(byte_chunks(Path(batch.path), budget, losing_rows(Path(batch.path))))) >= 4
    results = []
    for url, chunk_bytes in ((chunked_url, budget), (whole_url, 1 << 30)):
        with PostgresWarehouse(url, upsert_chunk_bytes=chunk_bytes) as wh:
            assert wh.upsert(stored).inserted == 10
            results.append(wh.upsert(batch))
    chunked, whole = results
    assert (chunked.inserted, chunked.updated, chunked.unchanged, chunked.duplicates) == (3, 3, 2, 2)
    assert chunked == whole
    assert _rows(chunked_url) == _rows(whole_url)
    by_id = {r[0]: r for r in _rows(chunked_url)}
    assert by_id["a4"][1] == "3" and by_id["n2"][1] == "2" and by_id["a2"][1] == "1"
    with PostgresWarehouse(chunked_url, upsert_chunk_bytes=budget) as wh:
        replay = wh.upsert(batch)
    assert (replay.inserted, replay.updated, replay.unchanged) == (0, 0, 8)


def test_a_failure_mid_file_keeps_whole_chunks_and_a_replay_ends_clean(
    tmp_path: Path, two_urls: tuple[str, str]
) -> None:
    url, clean_url = two_urls
    docs = [_padded(f"o{i}") for i in range(8)]
    per_row = len(orjson.dumps(docs[0]))
    bad = _write(tmp_path / "bad.parquet", docs, texts={5: '{"resourceType": "Observation", "id": "o5", oops'})
    with PostgresWarehouse(url, upsert_chunk_bytes=2 * per_row) as wh:
        with pytest.raises(LandedFileError) as caught:
            wh.upsert(bad)
        assert "oops" not in str(caught.value)  # no resource content in the message
        # Chunks [o0 o1] and [o2 o3] committed; [o4 o5] failed as a whole; [o6 o7] never ran.
        assert [r[0] for r in _rows(url)] == ["o0", "o1", "o2", "o3"]
        good = _write(tmp_path / "good.parquet", docs)
        replay = wh.upsert(good)
    assert (replay.inserted, replay.updated, replay.unchanged) == (4, 0, 4)
    with PostgresWarehouse(clean_url) as wh:
        assert wh.upsert(good).inserted == 8
    assert [r[:5] for r in _rows(url)] == [r[:5] for r in _rows(clean_url)]


def _descriptors_of(path: Path) -> int:
    """How many of this process's open file descriptors point at ``path`` (Linux: /proc/self/fd)."""
    found = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the descriptor listing the directory is gone by now
            found += fd.readlink() == path
    return found


def test_a_failure_mid_file_closes_the_landed_file_while_the_error_is_held(tmp_path: Path, postgres_url: str) -> None:
    """The error of a chunk PostgreSQL refuses holds ``upsert``'s frames for as long as its caller keeps it (the
    engine chains and reports it); the reader of the rest of the file (an open descriptor, a decoded batch), which
    the next chunk was being read from, must be closed before the error reaches the caller, not with the error."""
    docs = [_padded(f"o{i}") for i in range(40)]
    bad = _write(tmp_path / "bad.parquet", docs, texts={5: '{"resourceType": "Observation", "id": "o5", oops'})
    with PostgresWarehouse(postgres_url, upsert_chunk_bytes=2 * len(orjson.dumps(docs[0]))) as wh:
        with pytest.raises(LandedFileError) as caught:
            wh.upsert(bad)
        assert caught.value.__traceback__ is not None  # the error, and the frames it holds, are still alive
        assert _descriptors_of(Path(bad.path)) == 0


def test_copy_text_keeps_every_character_and_the_hash_matches_the_server(tmp_path: Path, postgres_url: str) -> None:
    doc = _padded("e1", comment='tab\there, back\\slash, quote", newline\nend, ünïcødé ✓')
    # raw whitespace a producer may leave between tokens (tab, CR, LF) must survive COPY's text format too
    raw = '{"resourceType":"Observation",\t"id":"e2",\r\n"meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z"}}'
    landed = _write(tmp_path / "f.parquet", [doc, resource("e2")], texts={1: raw})
    with PostgresWarehouse(postgres_url) as wh:
        assert wh.upsert(landed).inserted == 2
    with psycopg.connect(psycopg_conninfo(postgres_url)) as conn:
        rows = conn.execute(
            "SELECT id, resource, content_hash = encode(sha256(convert_to(%s, 'UTF8')), 'hex'), last_updated "
            "FROM fhir_resources WHERE id = 'e1' UNION ALL SELECT id, resource, "
            "content_hash = encode(sha256(convert_to(%s, 'UTF8')), 'hex'), last_updated FROM fhir_resources "
            "WHERE id = 'e2' ORDER BY id",
            (orjson.dumps(doc).decode(), raw),
        ).fetchall()
    assert rows[0][1] == doc and rows[0][2] is True
    assert rows[1][1]["id"] == "e2" and rows[1][2] is True
    assert rows[0][3] == datetime(2026, 1, 1, tzinfo=UTC)


def test_the_key_checks_of_many_files_open_one_duckdb_instance(tmp_path: Path, monkeypatch: Any) -> None:
    """Each PostgreSQL upsert of a landed file runs ``check_keys`` and ``losing_rows``; each opened an in-memory
    DuckDB (~12 ms of CPU) before, two per file and type of every sync. Now one is kept idle between files; a check
    that raises closes its instance, and the next opens a fresh one and answers as before."""
    opened: list[str] = []
    connect = duckdb.connect

    def counting(database: str = ":memory:", *args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        opened.append(database)
        return connect(database, *args, **kwargs)

    _pg_chunks.close_idle()
    monkeypatch.setattr(duckdb, "connect", counting)
    for n in range(5):
        landed = _write(tmp_path / f"f{n}.parquet", [_padded("a", T1), _padded("a", T2), _padded(f"b{n}")])
        check_keys(Path(landed.path), "c1", "Observation")
        assert losing_rows(Path(landed.path)) == [0]
    assert opened == [":memory:"]  # before: ten
    with pytest.raises(duckdb.IOException):
        losing_rows(tmp_path / "missing.parquet")
    assert losing_rows(Path(landed.path)) == [0]
    assert opened == [":memory:"] * 2
    with pytest.raises(LandedFileError, match="another connection"):
        check_keys(Path(landed.path), "c2", "Observation")


def test_the_next_chunk_is_read_while_the_server_merges_this_one(
    tmp_path: Path, postgres_url: str, monkeypatch: Any
) -> None:
    """Reading a chunk and encoding its keys (client CPU) runs in its own thread while the server classifies and
    upserts the chunk before it, so the two overlap instead of idling in turn. Each merge waits until the next
    chunk's preparation has started; done in turn, that never happens and the merge gives up."""
    docs = [_padded(f"o{i}") for i in range(8)]
    landed = _write(tmp_path / "f.parquet", docs)
    prepare, merge = _pg_merge.prepare_chunk, _pg_merge.merge_chunk
    started: list[threading.Event] = [threading.Event() for _ in range(5)]
    prepared_in: set[str] = set()
    overlapped: list[bool] = []

    def preparing(batches: Any, phases: dict[str, float]) -> _pg_merge.PreparedChunk:
        started[sum(e.is_set() for e in started)].set()  # chunks are prepared one at a time, in order
        prepared_in.add(threading.current_thread().name)
        return prepare(batches, phases)

    def merging(cur: Any, chunk: _pg_merge.PreparedChunk, *args: Any) -> tuple[int, int]:
        n = len(overlapped)
        if n + 1 < 4:  # four chunks: every merge but the last has a next chunk to overlap with
            overlapped.append(started[n + 1].wait(10))
        else:
            overlapped.append(True)
        return merge(cur, chunk, *args)

    monkeypatch.setattr(_pg_merge, "prepare_chunk", preparing)
    monkeypatch.setattr(_pg_merge, "merge_chunk", merging)
    with PostgresWarehouse(postgres_url, upsert_chunk_bytes=2 * len(orjson.dumps(docs[0]))) as wh:
        assert wh.upsert(landed).inserted == 8
    assert overlapped == [True] * 4
    assert threading.current_thread().name not in prepared_in
    assert [r[0] for r in _rows(postgres_url)] == [f"o{i}" for i in range(8)]


def test_a_staging_copy_sent_in_several_pieces_stores_every_row(
    tmp_path: Path, two_urls: tuple[str, str], monkeypatch: Any
) -> None:
    """The changed rows travel to the staging table a slice at a time (the server parses one while the client
    encodes the next); rows on either side of every slice boundary arrive whole, escapes included."""
    sliced_url, whole_url = two_urls
    docs = [_padded(f"s{i}", comment=f"tab\there {i}\\ and\nnewline") for i in range(7)]
    landed = _write(tmp_path / "f.parquet", docs)
    monkeypatch.setattr(_pg_merge, "_COPY_SLICE_ROWS", 2)
    with PostgresWarehouse(sliced_url) as wh:
        assert wh.upsert(landed).inserted == 7
    monkeypatch.setattr(_pg_merge, "_COPY_SLICE_ROWS", 1_000)
    with PostgresWarehouse(whole_url) as wh:
        assert wh.upsert(landed).inserted == 7
    assert _rows(sliced_url) == _rows(whole_url)
    assert [r[4] for r in _rows(sliced_url)] == docs
