"""Parquet landing: BDX-23 columns, BDX-17 streaming/atomic files, BDX-20 quarantine of every bad-line kind."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import (
    LANDING_FILE_SCHEMA,
    LANDING_SCHEMA,
    InvalidInputError,
    LandedFileError,
    LandingError,
    LandingZone,
    land_ndjson_file,
    landing,
    read_landed_file,
)

SRC = "https://ehr.example/bulk/Observation-1.ndjson"


def test_bdx23_landing_columns_and_values(zone: LandingZone) -> None:
    tt = datetime(2026, 3, 1, 12, tzinfo=UTC)
    raw = (
        b'{"resourceType":"Observation","id":"o1",  "meta":{"versionId":"7","lastUpdated":"2026-02-01T10:00:00+02:00"}}'
    )
    with zone.writer("c1", "Observation", "run-1", SRC, tenant_id="t1", transaction_time=tt) as w:
        assert w.add_line(raw + b"\r\n")
    landed = w.result
    table = pq.read_table(landed.path)
    assert table.schema.equals(LANDING_FILE_SCHEMA) and LANDING_FILE_SCHEMA.names[:-1] == LANDING_SCHEMA.names
    row = table.to_pylist()[0]
    assert row == {
        "tenant_id": "t1",
        "connection_id": "c1",
        "resource_type": "Observation",
        "id": "o1",
        "last_updated": datetime(2026, 2, 1, 8, tzinfo=UTC),
        "version_id": "7",
        "source": SRC,
        "transaction_time": tt,
        "run_id": "run-1",
        "resource_json": raw.decode(),  # exactly as received, whitespace included
        "content_hash": hashlib.sha256(raw).hexdigest(),  # of those bytes: the merge does not hash them again
    }
    assert landed.path == zone.root / "c1" / "Observation" / landed.path.name
    assert landed.path.name.startswith("run-1-") and landed.path.suffix == ".parquet"
    assert landed.rows == 1 and landed.quarantined == 0 and landed.quarantine_path is None
    assert landed.bytes == landed.path.stat().st_size
    assert landed.max_last_updated == datetime(2026, 2, 1, 8, tzinfo=UTC)


def test_bdx23_a_bulk_file_lands_the_same_columns_on_the_block_path(zone: LandingZone, tmp_path: Path) -> None:
    """``land_ndjson_file`` (Bulk files) lands most lines on the block path (``warehouse/_vector_checks.py``), not
    the line path above: each row still keeps its own id, versionId and lastUpdated, and the file's source,
    transactionTime and run; a line the block leaves to the line path (a leap second) lands the same way."""
    tt = datetime(2026, 3, 1, 12, tzinfo=UTC)
    lines = [
        b'{"resourceType":"Observation","id":"o1","meta":{"versionId":"7","lastUpdated":"2026-02-01T10:00:00Z"}}',
        b'{"resourceType":"Observation","id":"o2","meta":{"versionId":"W/x","lastUpdated":"2026-02-02T10:00:00Z"}}',
        b'{"resourceType":"Observation","id":"o3","meta":{"versionId":"2","lastUpdated":"2016-12-31T23:59:60Z"}}',
    ]
    path = tmp_path / "o.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    landed = land_ndjson_file(
        zone, path, connection_id="c1", resource_type="Observation", run_id="run-1", source=SRC,
        tenant_id="t1", transaction_time=tt,
    )  # fmt: skip
    rows = pq.read_table(landed.path).to_pylist()
    leap = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert [(r["id"], r["version_id"], r["last_updated"]) for r in rows] == [
        ("o1", "7", datetime(2026, 2, 1, 10, tzinfo=UTC)),
        ("o2", "W/x", datetime(2026, 2, 2, 10, tzinfo=UTC)),
        ("o3", "2", leap),
    ]
    assert [r["resource_json"] for r in rows] == [line.decode() for line in lines]
    assert [r["content_hash"] for r in rows] == [hashlib.sha256(line).hexdigest() for line in lines]
    shared = {(r["tenant_id"], r["connection_id"], r["resource_type"], r["source"], r["transaction_time"], r["run_id"])
              for r in rows}  # fmt: skip
    assert shared == {("t1", "c1", "Observation", SRC, tt, "run-1")}


def test_bdx17_batches_stream_into_row_groups(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path, batch_rows=100)
    landed = land(zone, [resource(f"o{i}") for i in range(1050)])
    meta = pq.ParquetFile(landed.path).metadata
    assert landed.rows == 1050 and meta.num_rows == 1050
    assert meta.num_row_groups == 11  # one per batch: the file was never built whole in memory
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_bdx17_batches_are_bounded_by_bytes_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large resources flush before ``batch_rows``: a writer never holds more than about BATCH_BYTES of JSON;
    repeated columns stay dictionary-encoded, unique ids and documents do not."""
    monkeypatch.setattr(landing, "BATCH_BYTES", 100_000)
    zone = LandingZone(tmp_path, batch_rows=1_000)
    landed = land(zone, [resource(f"o{i}", note=[{"text": "x" * 30_000}]) for i in range(10)])
    meta = pq.ParquetFile(landed.path).metadata
    assert landed.rows == 10
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 2]
    encodings = {meta.schema.column(i).name: meta.row_group(0).column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["resource_type"]
    assert "RLE_DICTIONARY" not in encodings["resource_json"] and "RLE_DICTIONARY" not in encodings["id"]


def test_bdx17_rerun_of_same_run_overwrites_not_duplicates(zone: LandingZone) -> None:
    first = land(zone, [resource("a")])
    second = land(zone, [resource("a"), resource("b")])
    assert first.path == second.path
    assert pq.read_table(second.path).num_rows == 2
    other_source = land(zone, [resource("c")], source="https://ehr.example/bulk/Observation-2.ndjson")
    assert other_source.path != first.path
    assert sorted(p.name for p in first.path.parent.iterdir()) == sorted([first.path.name, other_source.path.name])


def test_bdx17_exception_removes_temp_and_keeps_previous_file(zone: LandingZone) -> None:
    previous = land(zone, [resource("a")])
    with (
        pytest.raises(RuntimeError),
        zone.writer("c1", "Observation", "r1", "https://ehr.example/bulk/file1.ndjson") as w,
    ):
        w.add_line(orjson.dumps(resource("z")))
        w.add_line(b"not json")
        raise RuntimeError("download broke")
    assert list(previous.path.parent.iterdir()) == [previous.path]
    assert pq.read_table(previous.path).column("id").to_pylist() == ["a"]
    with pytest.raises(LandingError):
        _ = w.result


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"resourceType": "Observation", "id": ', "not valid JSON"),
        (b'["resourceType", "Observation"]', "not a JSON object"),
        (b'{"resourceType": "Observation", "status": "final"}', "missing or non-string 'id'"),
        (b'{"resourceType": "Observation", "id": 42}', "missing or non-string 'id'"),
        (b'{"resourceType": "Patient", "id": "p1"}', "resourceType 'Patient' does not match"),
        (b'{"id": "o1"}', "resourceType None does not match"),
        (b'{"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": "2026-01-01"}}', "lastUpdated"),
        (b'{"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": "2026-01-01T10:00:00"}}', "lastUpdated"),
        (
            b'{"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": "2026-13-01T10:00:00Z"}}',
            "lastUpdated",
        ),
        (b'{"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": 5}}', "lastUpdated"),
        (b'{"resourceType": "Observation", "id": "o1", "meta": {"versionId": 5}}', "versionId"),
        (b'{"resourceType": "Observation", "id": "o1", "note": [{"text": "a\\u0000b"}]}', "u0000"),
        (b'{"resourceType": "Observation", "id": "o1", "x": "\xff"}', "not valid JSON"),
        # valid JSON (a FHIR decimal has no range), so the reason must not say "not valid JSON"
        (b'{"resourceType": "Observation", "id": "o1", "valueQuantity": {"value": 1e400}}', "past a double's range"),
        (b'{"resourceType": "Observation", "id": "o1", "valueQuantity": {"value": -2.5E+400}}', "past a double's"),
    ],
)
def test_bdx20_bad_lines_are_quarantined_not_dropped(zone: LandingZone, line: bytes, reason: str) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        assert w.add_line(orjson.dumps(resource("good")))
        assert not w.add_line(line)
        assert w.add_line(orjson.dumps(resource("good2")) + b"\n")
    landed = w.result
    assert landed.rows == 2 and landed.quarantined == 1
    assert landed.quarantine_path is not None and landed.quarantine_path.parent == landed.path.parent
    q = pq.read_table(landed.quarantine_path).to_pylist()
    assert len(q) == 1
    assert q[0]["line_number"] == 2 and q[0]["raw_line"] == line and q[0]["source"] == SRC
    assert reason in q[0]["error"]


def test_escaped_backslash_before_u0000_text_is_not_a_nul(zone: LandingZone) -> None:
    line = b'{"resourceType": "Observation", "id": "o1", "note": [{"text": "C:\\\\u0000"}]}'
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        assert w.add_line(line)
    assert w.result.quarantined == 0


def test_blank_lines_are_skipped_and_line_numbers_kept(zone: LandingZone) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        w.add_line(b"\n")
        w.add_line(b"garbage\n")
        w.add_line(b"   \n")
    assert w.result.rows == 0 and w.result.quarantined == 1
    assert pq.read_table(w.result.quarantine_path).column("line_number").to_pylist() == [2]
    assert pq.read_table(w.result.path).schema.equals(LANDING_FILE_SCHEMA)


def test_rerun_without_bad_lines_removes_stale_quarantine(zone: LandingZone) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        w.add_line(b"garbage")
    stale = w.result.quarantine_path
    assert stale is not None and stale.exists()
    with zone.writer("c1", "Observation", "r1", SRC) as w2:
        w2.add_line(orjson.dumps(resource("a")))
    assert w2.result.quarantine_path is None and not stale.exists()


def test_add_resource_serialises_and_applies_the_same_checks(zone: LandingZone) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        assert w.add_resource(resource("a", valueQuantity={"value": 1.5}))
        assert not w.add_resource({"resourceType": "Observation"})
    landed = w.result
    assert landed.rows == 1 and landed.quarantined == 1
    stored = pq.read_table(landed.path).column("resource_json").to_pylist()[0]
    assert orjson.loads(stored) == resource("a", valueQuantity={"value": 1.5})


def test_bdx17_land_ndjson_file_streams_plain_and_gzip(zone: LandingZone, tmp_path: Path) -> None:
    body = b"".join(orjson.dumps(resource(f"o{i}")) + b"\n" for i in range(300)) + b"oops\n\n"
    plain = tmp_path / "plain.ndjson"
    plain.write_bytes(body)
    gz = tmp_path / "gz.ndjson"
    gz.write_bytes(gzip.compress(body))
    for path, seq in ((plain, "1"), (gz, "2")):
        landed = land_ndjson_file(
            zone, path, connection_id="c1", resource_type="Observation", run_id="r1", source=SRC, seq=seq
        )
        assert (landed.rows, landed.quarantined) == (300, 1)
        assert landed.path.name == f"r1-{seq}.parquet"
    with pytest.raises(LandingError, match="does not exist"):
        land_ndjson_file(
            zone, tmp_path / "missing", connection_id="c1", resource_type="Observation", run_id="r", source=SRC
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connection_id": "../etc"}, "connection_id"),
        ({"run_id": "a/b"}, "run_id"),
        ({"resource_type": "observation"}, "resource_type"),
        ({"source": ""}, "source"),
        ({"transaction_time": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_writer_rejects_unsafe_arguments(zone: LandingZone, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"connection_id": "c1", "resource_type": "Observation", "run_id": "r1", "source": SRC}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        zone.writer(**args)  # type: ignore[arg-type]


def test_closed_writer_refuses_more_lines(zone: LandingZone) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        w.add_line(orjson.dumps(resource("a")))
    with pytest.raises(LandingError, match="closed"):
        w.add_line(orjson.dumps(resource("b")))
    assert isinstance(pq.read_table(w.result.path).column("last_updated").type, pa.TimestampType)


def test_read_landed_file_rebuilds_the_description(zone: LandingZone) -> None:
    """Landing and upsert may be separate Dagster assets that pass only the path."""
    with zone.writer("c1", "Observation", "r1", SRC, tenant_id="t1") as w:
        w.add_line(orjson.dumps(resource("a", "2026-01-03T00:00:00Z")))
        w.add_line(orjson.dumps(resource("b", "2026-01-05T00:00:00+01:00")))
        w.add_line(b"bad")
    assert read_landed_file(w.result.path) == w.result
    with zone.writer("c1", "Observation", "r2", SRC) as empty:
        pass
    with pytest.raises(LandedFileError, match="empty"):
        read_landed_file(empty.result.path)
    with pytest.raises(LandedFileError, match="missing or not Parquet"):
        read_landed_file(zone.root / "nope.parquet")
