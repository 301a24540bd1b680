"""``open_warehouse`` target parsing and schema bookkeeping."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, SchemaVersionError, WarehouseTargetError, _sql, open_warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.postgres_backend import PostgresWarehouse, psycopg_conninfo
from warehouse.views import view_statements


def test_duckdb_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_warehouse("rel.duckdb") as a, open_warehouse("duckdb:///sub/rel2.duckdb") as b:
        assert isinstance(a, DuckDBWarehouse) and isinstance(b, DuckDBWarehouse)
        assert b.path == Path("sub/rel2.duckdb")
    with open_warehouse(f"duckdb:///{tmp_path}/abs.duckdb") as c, open_warehouse(tmp_path / "p.duckdb") as d:
        assert isinstance(c, DuckDBWarehouse) and c.path == tmp_path / "abs.duckdb"
        assert isinstance(d, DuckDBWarehouse)
    assert (tmp_path / "sub" / "rel2.duckdb").is_file()


@pytest.mark.parametrize("target", ["mysql://x/y", "duckdb://", "duckdb:///", ""])
def test_bad_targets_are_named(target: str) -> None:
    with pytest.raises(WarehouseTargetError):
        open_warehouse(target)


def test_psycopg_url_is_stripped_of_driver() -> None:
    assert psycopg_conninfo("postgresql+psycopg://u@h:5/db") == "postgresql://u@h:5/db"
    assert psycopg_conninfo("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(WarehouseTargetError):
        psycopg_conninfo("postgresql+psycopg2://u@h/db")


def test_schema_creation_is_idempotent_and_versioned(tmp_path: Path, zone: LandingZone) -> None:
    db = tmp_path / "w.duckdb"
    with open_warehouse(db) as wh:
        wh.upsert(land(zone, [resource("a")]))
    with open_warehouse(db) as wh:
        assert wh.live_ids("c1", "Observation") == {"a"}
        assert list(wh.iter_rows("SELECT version FROM schema_version")) == [{"version": 2}]
        with wh._write("test") as cur:
            cur.execute("INSERT INTO schema_version VALUES (99, now())")
    with pytest.raises(SchemaVersionError):
        open_warehouse(db)


@pytest.mark.postgres
def test_postgres_target_and_read_only(postgres_url: str, zone: LandingZone) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    with open_warehouse(postgres_url) as wh:
        assert isinstance(wh, PostgresWarehouse)
        wh.upsert(land(zone, [resource("a")]))
    with open_warehouse(postgres_url) as again:  # second schema pass is a no-op
        assert list(again.iter_rows("SELECT count(*) AS n FROM schema_version")) == [{"n": 1}]
    with open_warehouse(postgres_url, read_only=True) as ro:
        assert ro.live_ids("c1", "Observation") == {"a"}
        with pytest.raises(WarehouseTargetError, match="read-only"):
            ro.tombstone("c1", "Observation", ["a"], datetime.now(UTC))


@pytest.mark.postgres
def test_postgres_unreachable_is_a_typed_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WarehouseTargetError, match="cannot connect"):
        open_warehouse(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")


def test_duckdb_schema_1_is_migrated_to_an_unkeyed_fhir_resources(tmp_path: Path, zone: LandingZone) -> None:
    """Version 1 kept an ART index on fhir_resources' key; opening such a file rebuilds the table without it,
    keeping every row, and the warehouse works as before."""
    db = tmp_path / "v1.duckdb"
    v1 = dataclasses.replace(_sql.DUCKDB, keyed_resources=True)
    with duckdb.connect(str(db)) as conn:
        for stmt in _sql.schema_ddl(v1):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version VALUES (1, now())")
        for stmt in view_statements(v1):  # analyst views over the old table must not block the rebuild
            conn.execute(stmt)
        conn.execute(
            "INSERT INTO fhir_resources (connection_id, resource_type, id, last_updated, resource, landed_at) "
            "VALUES ('c1', 'Observation', 'old', TIMESTAMPTZ '2026-01-01 00:00:00+00', '{}', now())"
        )
    with open_warehouse(db) as wh:
        wh.upsert(land(zone, [resource("new")]))
        assert wh.live_ids("c1", "Observation") == {"old", "new"}
        versions = [r["version"] for r in wh.iter_rows("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [1, 2]
        keys = list(
            wh.iter_rows(
                "SELECT count(*) AS n FROM duckdb_constraints() WHERE table_name = 'fhir_resources' "
                "AND constraint_type = 'PRIMARY KEY'"
            )
        )
        assert keys == [{"n": 0}]
        assert wh.refresh_flat_tables()
    with open_warehouse(db) as again:  # a second open is a no-op
        assert [r["version"] for r in again.iter_rows("SELECT version FROM schema_version")] == [1, 2]
