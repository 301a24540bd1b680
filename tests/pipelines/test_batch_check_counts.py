"""A batch member's duplicate-keys check counts in one grouped query what ``Warehouse.key_counts`` counts per type,
on DuckDB and on PostgreSQL, and a warehouse that cannot be read fails the check instead of the run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetCheckEvaluation, AssetMaterialization

from engine import TypeReport
from pipelines.defs.sync.batch_checks import duplicate_verdicts, member_events
from pipelines.defs.sync.type_assets import warehouse_key
from pipelines.resources import WarehouseResource
from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, open_warehouse

TYPES = ["Observation", "Patient", "Condition"]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "wh.duckdb") if request.param == "duckdb" else request.getfixturevalue("postgres_url")


def test_grouped_counts_equal_key_counts_per_type(target: str, tmp_path: Path) -> None:
    zone = LandingZone(tmp_path / "landing")
    with open_warehouse(target) as wh:
        wh.upsert(land(zone, [resource("a"), resource("b"), resource("c")]))
        wh.upsert(land(zone, [resource("p1", resource_type="Patient")], resource_type="Patient", run_id="r2"))
        wh.upsert(land(zone, [resource("x")], connection_id="c2", run_id="r3"))  # another connection's row
        wh.tombstone("c1", "Observation", ["b"], datetime(2026, 2, 1, tzinfo=UTC))
        expected = {t: wh.key_counts("c1", t) for t in TYPES}
    got = duplicate_verdicts(WarehouseResource(target=target), "c1", TYPES)
    assert set(got) == set(TYPES)
    for resource_type, (live, verdict) in got.items():
        counts = expected[resource_type]
        assert live == counts.live, resource_type
        assert verdict.passed and verdict.metadata == {"rows": counts.rows, "distinct_keys": counts.keys,
                                                       "duplicates": 0}  # fmt: skip
    assert got["Observation"][0] == 2 and got["Condition"][0] == 0


def test_a_duplicated_key_fails_only_its_type(tmp_path: Path) -> None:
    zone, target = LandingZone(tmp_path / "landing"), str(tmp_path / "dup.duckdb")
    with open_warehouse(target) as wh:
        wh.upsert(land(zone, [resource("a"), resource("b")]))
        wh.upsert(land(zone, [resource("p1", resource_type="Patient")], resource_type="Patient", run_id="r2"))
        with wh._write("test") as cur:  # DuckDB keeps no key index: only the merge keeps keys unique
            cur.execute("INSERT INTO fhir_resources SELECT * FROM fhir_resources WHERE id = 'a'")
    got = duplicate_verdicts(WarehouseResource(target=target), "c1", TYPES)
    assert {t: v.passed for t, (_, v) in got.items()} == {"Observation": False, "Patient": True, "Condition": True}
    assert got["Observation"][1].metadata == {"rows": 3, "distinct_keys": 2, "duplicates": 1}


def test_an_unreadable_warehouse_fails_every_check_with_the_reason(tmp_path: Path) -> None:
    missing = WarehouseResource(target="postgresql+psycopg://nobody@127.0.0.1:9/none", lock_timeout_s=1)
    got = duplicate_verdicts(missing, "c1", TYPES)
    assert all(live is None and not v.passed and "could not count keys" in v.description for live, v in got.values())


def test_an_unreadable_warehouse_reports_no_row_count_rather_than_a_false_zero() -> None:
    """The member's rows are committed; the warehouse just cannot be read now. Its warehouse materialization must
    not say 0 live rows (a reader would think the data gone): the counts are left out, the check says why."""
    missing = WarehouseResource(target="postgresql+psycopg://nobody@127.0.0.1:9/none", lock_timeout_s=1)
    reports = {"Observation": TypeReport("Observation", fetched=3, created=3)}
    events = list(member_events("c1", reports, {}, warehouse=missing, quarantine_max_ratio=0.01))
    stored = [e for e in events if isinstance(e, AssetMaterialization) and e.asset_key == warehouse_key("Observation")]
    assert len(stored) == 1
    assert "live_rows" not in stored[0].metadata and "dagster/row_count" not in stored[0].metadata
    checks = [e for e in events if isinstance(e, AssetCheckEvaluation) and e.check_name == "no_duplicate_keys"]
    assert len(checks) == 1 and not checks[0].passed
