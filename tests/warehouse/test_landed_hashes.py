"""Landing files carry each resource's sha256 (``content_hash``); files landed before that column existed merge to
exactly the same rows, the merge hashing their JSON itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse
from warehouse.landed import LANDING_SCHEMA, read_landed_file


def _stored(wh: Warehouse) -> list[tuple[object, ...]]:
    with wh._read() as cur:
        cur.execute("SELECT id, content_hash, CAST(resource AS VARCHAR) FROM fhir_resources ORDER BY id")
        return cur.fetchmany(1000)


def test_a_file_landed_without_hashes_merges_to_the_same_rows(zone: LandingZone, tmp_path: Path) -> None:
    from warehouse.duckdb_backend import DuckDBWarehouse

    landed = land(zone, [resource(f"o{k}", note="é" * k) for k in range(50)])
    old = tmp_path / "old-layout.parquet"
    pq.write_table(pq.read_table(landed.path).select(LANDING_SCHEMA.names), old)  # the layout before the column
    new_wh, old_wh = DuckDBWarehouse(tmp_path / "new.duckdb"), DuckDBWarehouse(tmp_path / "old.duckdb")
    new_wh.upsert(landed)
    old_wh.upsert(read_landed_file(old))
    stored = _stored(new_wh)
    assert stored == _stored(old_wh) and len(stored) == 50
    assert all(h == hashlib.sha256(str(doc).encode()).hexdigest() for _, h, doc in stored)


def test_landed_hashes_match_the_servers_hash_of_the_stored_json(wh: Warehouse, zone: LandingZone) -> None:
    """On both backends ``content_hash`` is the sha256 of the stored text (PostgreSQL hashes on its side)."""
    wh.upsert(land(zone, [resource("o1", note="naïve ☃")]))
    with wh._read() as cur:
        cur.execute("SELECT content_hash FROM fhir_resources")
        row = cur.fetchone()
    assert row is not None
    expected = pq.read_table(next(zone.root.rglob("*.parquet"))).column("content_hash").to_pylist()
    assert [row[0]] == expected


def test_both_backends_hash_a_file_landed_without_hashes(wh: Warehouse, zone: LandingZone, tmp_path: Path) -> None:
    landed = land(zone, [resource(f"o{k}", note="é" * k) for k in range(20)])
    table = pq.read_table(landed.path)
    old = tmp_path / "old-layout.parquet"
    pq.write_table(table.select(LANDING_SCHEMA.names), old)
    wh.upsert(read_landed_file(old))
    with wh._read() as cur:
        cur.execute("SELECT id, content_hash FROM fhir_resources")
        stored = dict(cur.fetchmany(1000))
    texts = dict(zip(table.column("id").to_pylist(), table.column("resource_json").to_pylist(), strict=True))
    assert stored == {rid: hashlib.sha256(text.encode()).hexdigest() for rid, text in texts.items()}
