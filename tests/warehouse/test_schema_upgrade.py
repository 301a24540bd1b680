"""The warehouse schema (versioned in code: ``warehouse/_sql.py`` ``SCHEMA_VERSION``, ``Warehouse._migrate``)
upgrades a version-1 warehouse without losing data (issue 12), on DuckDB and PostgreSQL.

Version 1's DDL is frozen here as it shipped (``git show b728c96^:warehouse/_sql.py``), not derived from the
current code, so the test keeps describing the old schema whatever the current one becomes. Rows are written into
every table with plain SQL, the warehouse is opened with the current code (which migrates it), and every column
of every row reads back unchanged; the merge rules (BDX-24) then hold on the upgraded table.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, open_warehouse
from warehouse._sql import SCHEMA_VERSION
from warehouse.postgres_backend import psycopg_conninfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)


def _v1_ddl(text: str, json: str, blob: str) -> list[str]:
    ts = "TIMESTAMPTZ"
    return [
        f"CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL)",
        f"""CREATE TABLE fhir_resources (
            connection_id {text} NOT NULL, resource_type {text} NOT NULL, id {text} NOT NULL,
            tenant_id {text}, version_id {text}, last_updated {ts}, deleted_at {ts}, content_hash {text},
            resource {json}, landed_at {ts} NOT NULL, source {text}, run_id {text}, transaction_time {ts},
            PRIMARY KEY (connection_id, resource_type, id))""",
        f"""CREATE TABLE fhir_errors (
            connection_id {text} NOT NULL, run_id {text} NOT NULL, source {text} NOT NULL,
            line_number BIGINT NOT NULL, severity {text}, code {text}, diagnostics {text},
            issue_count INTEGER NOT NULL, outcome {json}, recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, run_id, source, line_number))""",
        f"""CREATE TABLE fhir_quarantine (
            tenant_id {text}, connection_id {text} NOT NULL, resource_type {text} NOT NULL, run_id {text} NOT NULL,
            source {text} NOT NULL, line_number BIGINT NOT NULL, error {text} NOT NULL, raw_line {blob},
            recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, resource_type, run_id, source, line_number))""",
        f"""CREATE TABLE fhir_attachments (
            connection_id {text} NOT NULL, url {text} NOT NULL, sha256 {text} NOT NULL, size BIGINT NOT NULL,
            content_type {text}, recorded_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, url))""",
    ]


def _obs(rid: str, version: str, when: str, value: float) -> str:
    body = {"resourceType": "Observation", "id": rid, "meta": {"versionId": version, "lastUpdated": when},
            "valueQuantity": {"value": value, "unit": "mg/dL"}}  # fmt: skip
    return orjson.dumps(body).decode()


# table -> rows in column order (the resource JSON as text: each backend casts it to its JSON type)
ROWS: dict[str, list[tuple[Any, ...]]] = {
    "fhir_resources": [
        ("c1", "Observation", "o1", "t1", "2", T1, None, "h-o1", _obs("o1", "2", "2026-02-01T09:30:00Z", 1.5), T1,
         "https://ehr/1.ndjson", "r1", T0),
        ("c1", "Observation", "o2", "t1", "1", T0, T1, "h-o2", _obs("o2", "1", "2026-01-01T00:00:00Z", 7.0), T0,
         "https://ehr/1.ndjson", "r1", T0),
        ("c1", "Patient", "p1", "t1", None, T0, None, "h-p1", '{"resourceType": "Patient", "id": "p1"}', T0,
         None, "r0", None),
        ("c2", "Observation", "o1", "t2", "9", T1, None, "h-c2", _obs("o1", "9", "2026-02-01T09:30:00Z", 3.0), T1,
         None, "r9", None),
    ],
    "fhir_errors": [
        ("c1", "r1", "https://ehr/err.ndjson", 3, "error", "processing", "not found", 1,
         '{"resourceType": "OperationOutcome"}', T1),
    ],
    "fhir_quarantine": [("t1", "c1", "Observation", "r1", "https://ehr/1.ndjson", 7, "no id", b"{\"x\": 1}", T1)],
    "fhir_attachments": [("c1", "https://ehr/Binary/1", "a" * 64, 11, "text/plain", T1)],
}  # fmt: skip
JSON_COLUMNS = {"fhir_resources": 8, "fhir_errors": 8}
ORDER = {
    "fhir_resources": "connection_id, resource_type, id",
    "fhir_errors": "line_number",
    "fhir_quarantine": "line_number",
    "fhir_attachments": "url",
}


def _create_v1(execute: Any, text: str, json: str, blob: str) -> None:
    for stmt in _v1_ddl(text, json, blob):
        execute(stmt)
    execute("INSERT INTO schema_version VALUES (1, CAST('2026-01-01 00:00:00+00' AS TIMESTAMPTZ))")
    for table, rows in ROWS.items():
        for row in rows:
            marks = ", ".join(f"CAST(%s AS {json})" if JSON_COLUMNS.get(table) == i else "%s" for i in range(len(row)))
            execute(f"INSERT INTO {table} VALUES ({marks})", row)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def v1_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A warehouse written by version 1 of the schema, with rows in every table."""
    if request.param == "duckdb":
        path = tmp_path / "v1.duckdb"
        with duckdb.connect(str(path)) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            _create_v1(lambda sql, p=(): conn.execute(sql.replace("%s", "?"), list(p)), "VARCHAR", "JSON", "BLOB")
        yield str(path)
        return
    url = str(request.getfixturevalue("postgres_url"))
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        _create_v1(lambda sql, p=(): conn.execute(sql, p or None), "TEXT", "JSONB", "BYTEA")
    yield url


def _norm(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    values = list(row.values())
    if table in JSON_COLUMNS:
        i = JSON_COLUMNS[table]
        raw = values[i]
        values[i] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return tuple(
        v.astimezone(UTC) if isinstance(v, datetime) else bytes(v) if isinstance(v, memoryview) else v for v in values
    )


def _expected(table: str) -> list[tuple[Any, ...]]:
    out = []
    for row in ROWS[table]:
        values = list(row)
        if table in JSON_COLUMNS:
            values[JSON_COLUMNS[table]] = orjson.loads(values[JSON_COLUMNS[table]])
        out.append(tuple(values))
    return out


def test_version_1_warehouse_upgrades_with_every_row_intact(v1_target: str, tmp_path: Path) -> None:
    with open_warehouse(v1_target) as wh:  # opening with the current code migrates the schema
        versions = [r["version"] for r in wh.iter_rows("SELECT version FROM schema_version ORDER BY version")]
        assert versions[0] == 1 and versions[-1] == SCHEMA_VERSION
        for table in ROWS:
            stored = [_norm(table, r) for r in wh.iter_rows(f"SELECT * FROM {table} ORDER BY {ORDER[table]}")]
            assert stored == sorted(_expected(table), key=lambda r: _order_key(table, r)), table
        assert wh.live_ids("c1", "Observation") == {"o1"}  # o2 was tombstoned at version 1 and stays so
        # BDX-24 on the upgraded table: an older copy is ignored, a newer one replaces, a new id is added.
        zone = LandingZone(tmp_path / "landing")
        older = resource("o1", last_updated="2026-01-15T00:00:00Z", version="1")
        stats = wh.upsert(land(zone, [older], run_id="r2"))
        assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, 1)
        newer = [resource("o1", last_updated="2026-03-01T00:00:00Z", version="3"), resource("o3")]
        stats = wh.upsert(land(zone, newer, run_id="r3"))
        assert (stats.inserted, stats.updated) == (1, 1)
        counts = wh.key_counts("c1")
        assert counts.rows == counts.keys == 4  # o1, o2 (tombstone), o3, p1: no duplicate key after the rebuild
    with open_warehouse(v1_target) as again:  # a second open migrates nothing
        versions = [r["version"] for r in again.iter_rows("SELECT version FROM schema_version ORDER BY version")]
        assert versions[0] == 1 and versions[-1] == SCHEMA_VERSION and len(versions) == len(set(versions))
        assert [r["n"] for r in again.iter_rows("SELECT count(*) AS n FROM fhir_resources")] == [5]


def _order_key(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    if table == "fhir_resources":
        return row[0], row[1], row[2]
    if table == "fhir_attachments":
        return (row[1],)
    if table == "fhir_errors":
        return (row[3],)
    return (row[5],)
