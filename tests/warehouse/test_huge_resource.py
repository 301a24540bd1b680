"""One huge resource (issue 10): a 20 MB resource lands and merges with the rest of its file on both backends, and
one over ``EHRSYNC_MAX_RESOURCE_BYTES`` is quarantined with the reason while every other row is kept (BDX-17,
BDX-20, BDX-24). Before the change the DuckDB merge of such a file ran out of memory on every rerun."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import InvalidInputError, LandingZone, UpsertStats, Warehouse, land_ndjson_file
from warehouse.limits import LARGE_ROW_BYTES, MAX_RESOURCE_ENV, QUARANTINE_PREFIX_BYTES, max_resource_bytes

MIB = 1024 * 1024


def _huge(rid: str, size: int) -> bytes:
    return orjson.dumps(resource(rid, note=[{"text": "x" * size}]))


def _write_ndjson(path: Path, huge_line: bytes, *, normal: int = 100, gzipped: bool = False) -> list[bytes]:
    lines = [orjson.dumps(resource(f"o{i}")) for i in range(normal)]
    lines.insert(normal // 2, huge_line)
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return lines


def _hash_of(wh: Warehouse, rid: str) -> str:
    with wh._read() as cur:
        cur.execute("SELECT content_hash FROM fhir_resources WHERE id = %s", (rid,))
        row = cur.fetchone()
    assert row is not None
    return str(row[0])


def test_a_20mb_resource_is_stored_with_the_rest_of_its_file(wh: Warehouse, zone: LandingZone, tmp_path: Path) -> None:
    """The huge line and its 100 neighbours all reach ``fhir_resources``, intact; a rerun changes nothing."""
    huge = _huge("huge", 20 * MIB)
    _write_ndjson(tmp_path / "Observation.ndjson", huge)
    landed = land_ndjson_file(
        zone, tmp_path / "Observation.ndjson", connection_id="c1", resource_type="Observation", run_id="r1", source="s"
    )
    assert (landed.rows, landed.quarantined) == (101, 0)
    meta = pq.ParquetFile(landed.path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [50, 1, 50]  # isolated
    assert wh.upsert(landed) == UpsertStats(inserted=101, updated=0, unchanged=0)
    assert wh.live_ids("c1", "Observation") == {"huge", *(f"o{i}" for i in range(100))}
    assert _hash_of(wh, "huge") == hashlib.sha256(huge).hexdigest()
    assert wh.upsert(landed) == UpsertStats(inserted=0, updated=0, unchanged=101)


def test_a_resource_over_the_limit_is_quarantined_with_the_reason(
    wh: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over ``EHRSYNC_MAX_RESOURCE_BYTES``: quarantined (reason + first bytes), every other row stored, and the
    rerun lands the same way instead of failing."""
    monkeypatch.setenv(MAX_RESOURCE_ENV, str(2 * MIB))
    zone = LandingZone(tmp_path / "landing")
    huge = _huge("huge", 5 * MIB)
    _write_ndjson(tmp_path / "Observation.ndjson.gz", huge, gzipped=True)
    for run in ("r1", "r2"):
        landed = land_ndjson_file(
            zone,
            tmp_path / "Observation.ndjson.gz",
            connection_id="c1",
            resource_type="Observation",
            run_id=run,
            source="s",
        )
        assert (landed.rows, landed.quarantined) == (100, 1)
        wh.upsert(landed)
    assert wh.live_ids("c1", "Observation") == {f"o{i}" for i in range(100)}
    with wh._read() as cur:
        cur.execute("SELECT run_id, line_number, error, raw_line FROM fhir_quarantine ORDER BY run_id")
        rows = cur.fetchmany(10)
    assert [(r[0], r[1]) for r in rows] == [("r1", 51), ("r2", 51)]
    assert f"resource of {len(huge)} bytes is over the {2 * MIB}-byte limit ({MAX_RESOURCE_ENV})" in rows[0][2]
    assert bytes(rows[0][3]) == huge[:QUARANTINE_PREFIX_BYTES]


def test_an_over_limit_resource_from_a_search_page_is_quarantined(zone: LandingZone) -> None:
    """The REST path (``add_resource``) applies the same limit."""
    with zone.writer("c1", "Observation", "r1", "https://ehr.example/Observation", seq=1) as w:
        w.max_resource_bytes = MIB
        assert w.add_resource(orjson.loads(_huge("huge", 2 * MIB))) is False
        assert w.add_resource(resource("small")) is True
    assert (w.result.rows, w.result.quarantined) == (1, 1)


def test_the_limit_is_validated() -> None:
    assert max_resource_bytes({}) == 64 * MIB
    assert max_resource_bytes({MAX_RESOURCE_ENV: "1048576"}) == MIB
    for bad in ("lots", "-5", "12", str(1024 * MIB)):
        with pytest.raises(InvalidInputError, match=MAX_RESOURCE_ENV):
            max_resource_bytes({MAX_RESOURCE_ENV: bad})


def test_a_failed_merge_of_a_large_resource_raises_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raised memory limit is restored after the chunk; when a statement of the chunk failed, DuckDB refuses
    the restore until the rollback, and the statement's own error (not DuckDB's "transaction is aborted") is
    what the caller sees."""
    import duckdb

    from warehouse import _duck_merge, duckdb_backend

    zone = LandingZone(tmp_path / "landing")
    landed = land(zone, [resource("big", note="x" * (LARGE_ROW_BYTES + 10))])

    def failing(cur: object, *args: object, **kw: object) -> tuple[int, int, int]:
        assert isinstance(cur, duckdb_backend.DuckCursor)
        cur.execute("SELECT error('disk went away')")
        raise AssertionError("unreachable")

    monkeypatch.setattr(duckdb_backend, "merge_chunk", failing)
    wh = duckdb_backend.DuckDBWarehouse(tmp_path / "wh.duckdb")
    with pytest.raises(duckdb.Error, match="disk went away"):
        wh.upsert(landed)
    monkeypatch.setattr(duckdb_backend, "merge_chunk", _duck_merge.merge_chunk)
    assert wh.upsert(landed).inserted == 1


def _sized(rid: str, size: int) -> bytes:
    """A resource line of exactly ``size`` bytes."""
    line = _huge(rid, 0)
    line = _huge(rid, size - len(line))
    assert len(line) == size
    return line


@pytest.mark.parametrize("block_landing", [False, True], ids=["line-by-line", "blocks"])
@pytest.mark.parametrize("over", [1, 2])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_bdx17_a_line_just_over_the_limit_is_quarantined_on_either_landing_path(
    tmp_path: Path, block_landing: bool, over: int, eol: bytes
) -> None:
    """A line one or two bytes over the limit still fits the reader's ``limit + 2`` and reaches the writer whole;
    the writer's own check quarantines it. One exactly at the limit lands."""
    limit = 4096
    zone = LandingZone(tmp_path / "landing", max_resource_bytes=limit, block_landing=block_landing)
    at, past = _sized("at", limit), _sized("past", limit + over)
    (tmp_path / "o.ndjson").write_bytes(b"".join(x + eol for x in (orjson.dumps(resource("a")), at, past)))
    landed = land_ndjson_file(
        zone, tmp_path / "o.ndjson", connection_id="c1", resource_type="Observation", run_id="r1", source="s"
    )
    assert (landed.rows, landed.quarantined) == (2, 1)
    ids = pq.read_table(landed.path, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == ["a", "at"]
