"""How DuckDB stores ``fhir_resources.resource`` (issue 14): ZSTD in a new warehouse; a warehouse created before
keeps DuckDB's default compression and merges as ever. And the first-load append that reads the landing file
without joining the stage gives the same rows as the joined append."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from tests.warehouse.conftest import land, resource
from warehouse import LandedFile, LandingZone, UpsertStats
from warehouse._sql import DUCKDB, SCHEMA_VERSION, schema_ddl
from warehouse.duckdb_backend import DuckDBWarehouse

T1, T2 = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


def _resource_compressions(path: Path) -> set[str]:
    con = duckdb.connect(str(path))
    try:
        con.execute("CHECKPOINT")
        rows = con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('fhir_resources') "
            "WHERE column_name = 'resource' AND segment_type <> 'VALIDITY'"
        ).fetchall()
    finally:
        con.close()
    return {str(r[0]) for r in rows}


def _notes(n: int) -> list[dict[str, object]]:
    return [resource(f"o{k}", T1, note=f"reading {k} " * (k % 7 + 1)) for k in range(n)]


def test_a_new_duckdb_warehouse_stores_the_resource_json_with_zstd(tmp_path: Path, zone: LandingZone) -> None:
    path = tmp_path / "wh.duckdb"
    with DuckDBWarehouse(path) as wh:
        assert wh.upsert(land(zone, _notes(3000))) == UpsertStats(inserted=3000, updated=0, unchanged=0)
    assert _resource_compressions(path) == {"ZSTD"}


def test_a_warehouse_created_before_zstd_keeps_its_compression_and_merges(tmp_path: Path, zone: LandingZone) -> None:
    """Schema version 2 as it was created before ``resource_storage``: no migration, same merge results."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for ddl in schema_ddl(dataclasses.replace(DUCKDB, resource_storage="")):
        con.execute(ddl)
    con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, datetime.now(UTC)])
    con.close()
    with DuckDBWarehouse(path) as wh:
        assert wh.upsert(land(zone, _notes(3000))).inserted == 3000
        again = land(zone, [resource("o1", T2, "2", note="amended"), resource("new", T2)], run_id="r2")
        assert wh.upsert(again) == UpsertStats(inserted=1, updated=1, unchanged=0)
        assert wh.live_ids("c1", "Observation") == {f"o{k}" for k in range(3000)} | {"new"}
    assert "ZSTD" not in _resource_compressions(path)


def _stored(wh: DuckDBWarehouse) -> list[tuple[object, ...]]:
    with wh._read() as cur:
        cur.execute(
            "SELECT connection_id, resource_type, id, tenant_id, version_id, last_updated, content_hash, "
            "CAST(resource AS VARCHAR), source, run_id, transaction_time, deleted_at FROM fhir_resources ORDER BY id"
        )
        return cur.fetchmany(10_000)


def test_a_first_load_appended_from_the_file_equals_the_joined_append(tmp_path: Path, zone: LandingZone) -> None:
    """The same file into an empty warehouse (every row new, no repeated id: appended straight from the file) and
    into one where a repeated id sends it through the stage join: every stored column of every row is the same."""
    rows = [orjson.dumps(r) for r in _notes(500)]
    straight, joined = DuckDBWarehouse(tmp_path / "a.duckdb"), DuckDBWarehouse(tmp_path / "b.duckdb")
    with straight, joined:
        assert straight.upsert(_land(zone, rows, "r1")).inserted == 500
        # an older copy of o0 first in the file: the stage keeps the newer one, so the append must join
        older = orjson.dumps(resource("o0", "2025-01-01T00:00:00Z", note="older"))
        assert joined.upsert(_land(zone, [older, *rows], "r2")) == UpsertStats(500, 0, 0, duplicates=1)
        stored = _stored(straight)
        assert [(*r[:9], *r[10:]) for r in stored] == [(*r[:9], *r[10:]) for r in _stored(joined)]  # but run_id
        assert {(r[3], r[10]) for r in stored} == {("tenant-7", datetime(2026, 3, 1, 12, 0, tzinfo=UTC))}


def _land(zone: LandingZone, lines: list[bytes], run_id: str) -> LandedFile:
    """Land with every landing column set (tenant and transaction time too), so a column out of place shows."""
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with zone.writer("c1", "Observation", run_id, "https://ehr.example/bulk/f.ndjson", "tenant-7", when) as w:
        for line in lines:
            w.add_line(line)
    return w.result
