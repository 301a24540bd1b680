"""DuckDB's unkeyed merge (delete replaced rows, append) against PostgreSQL's keyed ``ON CONFLICT`` upsert.

Both must apply BDX-24/BDX-21 identically: for any sequence of landed files and tombstones, the same counts from
every call and the same rows afterwards, and never two rows for one key (DuckDB keeps no index to refuse them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, UpsertStats, Warehouse, open_warehouse
from warehouse.duckdb_backend import DuckDBWarehouse

BASE = datetime(2026, 1, 1, tzinfo=UTC)
IDS = ["a", "b", "c", "d", "e"]

# One landed line: (id, lastUpdated day or None, versionId, content marker).
line = st.tuples(
    st.sampled_from(IDS), st.one_of(st.none(), st.integers(0, 4)), st.sampled_from(["1", "2"]), st.integers(0, 2)
)
# A file: its lines and when the server answered them, in half days (None: unknown); a tombstone: ids and the day,
# deleted at noon (so a file can be answered before, at or after a deletion).
upsert_op = st.tuples(st.just("upsert"), st.tuples(st.lists(line, max_size=6), st.one_of(st.none(), st.integers(0, 9))))
tombstone_op = st.tuples(st.just("tombstone"), st.tuples(st.lists(st.sampled_from(IDS), max_size=3), st.integers(0, 4)))
operations = st.lists(st.one_of(upsert_op, tombstone_op), min_size=1, max_size=6)


def _instant(day: int | None) -> str | None:
    return None if day is None else (BASE + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _apply(
    wh: Warehouse, zone: LandingZone, connection_id: str, ops: list[tuple[str, Any]], start: int = 0
) -> list[object]:
    """Run ``ops`` (numbered from ``start``) against ``wh`` under ``connection_id``; returns what each reported."""
    results: list[object] = []
    for n, (kind, arg) in enumerate(ops, start=start):
        if kind == "upsert":
            items, half_days = arg
            lines = [resource(rid, _instant(day), version, value=marker) for rid, day, version, marker in items]
            answered = None if half_days is None else BASE + timedelta(hours=12 * half_days)
            landed = land(zone, lines, run_id=f"r{n}", connection_id=connection_id, transaction_time=answered)
            results.append(wh.upsert(landed))
        else:
            ids, day = arg
            results.append(wh.tombstone(connection_id, "Observation", ids, BASE + timedelta(days=day, hours=12)))
    return results


def _rows(wh: Warehouse, connection_id: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r.values())
        for r in wh.iter_rows(
            "SELECT id, version_id, last_updated, deleted_at, content_hash, run_id, transaction_time, "
            "CAST(resource AS VARCHAR) AS doc "
            "FROM fhir_resources WHERE connection_id = %s ORDER BY id",
            (connection_id,),
        )
    ]


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[Warehouse]:
    with open_warehouse(tmp_path / "merge.duckdb") as wh:
        yield wh


def _normalise(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PostgreSQL's JSONB re-renders the document; compare the parsed JSON instead of its text."""
    return [(*r[:-1], orjson.loads(r[-1]) if r[-1] is not None else None) for r in rows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_duckdb_merge_never_duplicates_a_key(duck: Warehouse, tmp_path: Path, ops: list[tuple[str, Any]]) -> None:
    connection_id = uuid.uuid4().hex
    _apply(duck, LandingZone(tmp_path / "landing"), connection_id, ops)
    rows = _rows(duck, connection_id)
    assert len({r[0] for r in rows}) == len(rows)


@pytest.mark.postgres
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_bdx24_duckdb_merge_matches_postgres_upsert(
    duck: Warehouse, postgres_url: str, tmp_path: Path, ops: list[tuple[str, Any]]
) -> None:
    connection_id = uuid.uuid4().hex
    zone = LandingZone(tmp_path / "landing")
    with open_warehouse(postgres_url) as pg:
        pg_results = _apply(pg, zone, connection_id, ops)
        pg_rows = _rows(pg, connection_id)
    duck_results = _apply(duck, zone, connection_id, ops)
    assert duck_results == pg_results
    assert _normalise(_rows(duck, connection_id)) == _normalise(pg_rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_duckdb_chunked_merge_matches_the_whole_file_merge(tmp_path: Path, ops: list[tuple[str, Any]]) -> None:
    """Files split into one-row row groups and merged two rows per transaction end exactly like whole files,
    counts included; and each file merged a second time right away changes nothing (BDX-24 replay)."""
    connection_id = uuid.uuid4().hex
    whole_zone, chunk_zone = LandingZone(tmp_path / "whole"), LandingZone(tmp_path / "chunks", batch_rows=1)
    with (
        DuckDBWarehouse(tmp_path / "whole.duckdb") as whole,
        DuckDBWarehouse(tmp_path / "chunked.duckdb", upsert_chunk_rows=2) as chunked,
    ):
        chunked_results: list[object] = []
        for n, op in enumerate(ops):
            chunked_results += _apply(chunked, chunk_zone, connection_id, [op], start=n)
            if op[0] == "upsert":
                replay = _apply(chunked, chunk_zone, connection_id, [op], start=n)[0]
                assert isinstance(replay, UpsertStats) and replay.inserted == replay.updated == 0
        assert chunked_results == _apply(whole, whole_zone, connection_id, ops)
        assert _rows(chunked, connection_id) == _rows(whole, connection_id)
