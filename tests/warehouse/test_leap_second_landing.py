"""A resource whose ``meta.lastUpdated`` is a leap second (``23:59:60Z``; FHIR R4 allows second 60) lands and merges
with ``last_updated`` the last microsecond of its minute, on DuckDB and PostgreSQL; it is never quarantined. The
block check sends such a line to the line path, which clamps it (``warehouse/_vector_checks.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tests.warehouse.conftest import resource
from warehouse import LandingZone, Warehouse, land_ndjson_file
from warehouse._vector_checks import check_block

SRC = "https://ehr.example/bulk/Observation-1.ndjson"
LAST = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
LEAP = [
    resource("leap", "2016-12-31T23:59:60Z"),
    resource("leap-offset", "2017-01-01T00:59:60.5+01:00"),
    resource("before", "2016-12-31T23:59:59.5Z"),
    resource("not-a-second", "2016-12-31T23:59:61Z"),
]


def _stored(wh: Warehouse) -> dict[str, datetime]:
    with wh._read() as cur:
        cur.execute("SELECT id, last_updated FROM fhir_resources ORDER BY id")
        return {r[0]: r[1] for r in cur.fetchmany(100)}


def test_bdx23_bulk_file_with_a_leap_second_lands_and_merges_as_59_999999(
    wh: Warehouse, zone: LandingZone, tmp_path: Path
) -> None:
    """BDX-23/24: the leap-second resources land (only ``:61`` is quarantined) and the merge stores 23:59:59.999999
    UTC, the later of the two copies of that minute sorting after ``:59.5``."""
    lines = [orjson.dumps(r) for r in LEAP]
    fast = check_block(pa.array(lines, pa.large_binary()), "Observation", 1 << 20).fast.to_pylist()
    assert fast == [False, False, True, False]  # leap seconds are the line path's to decide
    path = tmp_path / "Observation-1.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    landed = land_ndjson_file(zone, path, connection_id="c1", resource_type="Observation", run_id="r1", source=SRC)
    assert (landed.rows, landed.quarantined) == (3, 1)
    assert landed.max_last_updated == LAST
    assert landed.quarantine_path is not None
    reasons = pq.read_table(landed.quarantine_path).column("error").to_pylist()
    assert len(reasons) == 1 and "malformed 'meta.lastUpdated'" in reasons[0]
    stats = wh.upsert(landed)
    assert stats.inserted == 3
    assert _stored(wh) == {
        "before": datetime(2016, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        "leap": LAST,
        "leap-offset": LAST,
    }


def test_bdx23_rest_resource_with_a_leap_second_lands(zone: LandingZone) -> None:
    """REST pages land through ``add_resource``: the same clamp, no quarantine."""
    with zone.writer("c1", "Observation", "r1", "https://ehr.example/fhir/Observation") as w:
        assert w.add_resource(resource("leap", "2016-12-31T23:59:60.999Z"))
        assert not w.add_resource(resource("not-a-second", "2016-12-31T23:59:61Z"))
    assert (w.result.rows, w.result.quarantined) == (1, 1)
    assert pq.read_table(w.result.path).column("last_updated").to_pylist() == [LAST]
