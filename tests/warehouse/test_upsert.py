"""BDX-24 upsert rules, BDX-21 tombstones and replay idempotency, on DuckDB and PostgreSQL alike."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from tests.warehouse.conftest import land, resource
from warehouse import (
    KeyCounts,
    LandedFile,
    LandedFileError,
    LandingZone,
    UpsertStats,
    Warehouse,
    _sql,
    open_warehouse,
)
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.postgres_backend import PostgresWarehouse

T1 = "2026-01-01T00:00:00Z"
T2 = "2026-01-02T00:00:00Z"
T3 = "2026-01-03T00:00:00Z"


def _landed_at(wh: Warehouse) -> dict[str, datetime]:
    with wh._read() as cur:
        cur.execute("SELECT id, landed_at FROM fhir_resources ORDER BY id")
        return {r[0]: r[1] for r in cur.fetchmany(1000)}


def _row(wh: Warehouse, rid: str) -> tuple[object, ...]:
    with wh._read() as cur:
        cur.execute(
            "SELECT version_id, last_updated, deleted_at, CAST(resource AS VARCHAR) FROM fhir_resources WHERE id = %s",
            (rid,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def test_bdx24_first_load_inserts_every_id(wh: Warehouse, zone: LandingZone) -> None:
    stats = wh.upsert(land(zone, [resource(f"o{i}") for i in range(50)]))
    assert stats == UpsertStats(inserted=50, updated=0, unchanged=0)
    assert wh.live_ids("c1", "Observation") == {f"o{i}" for i in range(50)}


def test_bdx24_replay_changes_nothing(wh: Warehouse, zone: LandingZone) -> None:
    """Replaying the same export twice yields identical tables: same fingerprint, landed_at untouched."""
    landed = land(zone, [resource(f"o{i}", status="final") for i in range(20)])
    wh.upsert(landed)
    before, stamps = wh.row_fingerprint(), _landed_at(wh)
    again = land(zone, [resource(f"o{i}", status="final") for i in range(20)], run_id="r2")
    assert wh.upsert(again) == UpsertStats(inserted=0, updated=0, unchanged=20)
    assert wh.upsert(landed) == UpsertStats(inserted=0, updated=0, unchanged=20)
    assert wh.row_fingerprint() == before
    assert _landed_at(wh) == stamps


def test_bdx24_newer_updates_and_counts_are_exact(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T1), resource("b", T1), resource("c", T1)]))
    stats = wh.upsert(land(zone, [resource("a", T2, "2"), resource("b", T1), resource("d", T1)], run_id="r2"))
    assert stats == UpsertStats(inserted=1, updated=1, unchanged=1)
    assert _row(wh, "a")[0] == "2"


def test_bdx24_out_of_order_older_version_is_ignored(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T2, "2", status="amended")]))
    before = wh.row_fingerprint()
    stats = wh.upsert(land(zone, [resource("a", T1, "1", status="preliminary")], run_id="r0"))
    assert stats == UpsertStats(inserted=0, updated=0, unchanged=1)
    assert wh.row_fingerprint() == before
    assert '"amended"' in str(_row(wh, "a")[3])


def test_bdx24_equal_last_updated_with_new_version_or_content_updates(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T1, "1"), resource("b", T1, "1", status="x")]))
    stats = wh.upsert(land(zone, [resource("a", T1, "2"), resource("b", T1, "1", status="y")], run_id="r2"))
    assert stats == UpsertStats(inserted=0, updated=2, unchanged=0)
    assert _row(wh, "a")[0] == "2"
    assert '"y"' in str(_row(wh, "b")[3])


def test_bdx24_equal_last_updated_then_older_version_is_ignored(wh: Warehouse, zone: LandingZone) -> None:
    """bulk-data.md BDX-24: lastUpdated, then versionId. Two versions in one lastUpdated tick (a server that dates to
    the second), or a server that sends no lastUpdated at all: a late copy of version 2 must not replace version 10
    (numeric versionIds compare as numbers, not text)."""
    wh.upsert(land(zone, [resource("a", T1, "10", status="v10"), resource("b", None, "3", status="v3")]))
    before = wh.row_fingerprint()
    late = [resource("a", T1, "2", status="v2"), resource("b", None, "2", status="v2")]
    assert wh.upsert(land(zone, late, run_id="r0")) == UpsertStats(inserted=0, updated=0, unchanged=2)
    assert wh.row_fingerprint() == before
    assert '"v10"' in str(_row(wh, "a")[3]) and '"v3"' in str(_row(wh, "b")[3])
    # Within one file too: the higher version wins a tie of lastUpdated, wherever its line is.
    tie = [resource("c", T1, "11", status="v11"), resource("c", T1, "9", status="v9")]
    wh.upsert(land(zone, tie, run_id="r1"))
    assert '"v11"' in str(_row(wh, "c")[3])
    # Opaque (non-numeric) versionIds cannot be ordered: a different one at the same lastUpdated still updates.
    wh.upsert(land(zone, [resource("d", T1, "W/abc", status="one")], run_id="r2"))
    assert wh.upsert(land(zone, [resource("d", T1, "W/abb", status="two")], run_id="r3")).updated == 1


def test_bdx24_missing_last_updated_never_replaces_a_dated_row(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T1, "1", status="dated")]))
    stats = wh.upsert(land(zone, [resource("a", None, None, status="undated")], run_id="r2"))
    assert stats.updated == 0
    assert '"dated"' in str(_row(wh, "a")[3])


def test_bdx24_duplicate_ids_in_one_file_last_by_last_updated_wins(wh: Warehouse, zone: LandingZone) -> None:
    landed = land(
        zone,
        [resource("a", T2, "2", status="mid"), resource("a", T3, "3", status="new"), resource("a", T1, "1")],
    )
    assert wh.upsert(landed) == UpsertStats(inserted=1, updated=0, unchanged=0, duplicates=2)
    assert _row(wh, "a")[0] == "3"
    # Same lastUpdated twice: the later line of the file wins.
    tie = land(zone, [resource("b", T1, "1", status="first"), resource("b", T1, "1", status="second")], run_id="r2")
    wh.upsert(tie)
    assert '"second"' in str(_row(wh, "b")[3])


def test_bdx30_copies_of_an_id_in_one_search_are_not_taken_to_be_in_last_updated_order(
    wh: Warehouse, zone: LandingZone
) -> None:
    """Search results are never assumed sorted by ``_lastUpdated`` (BDX-30), so among copies of one id in one file
    the newest ``lastUpdated`` wins wherever it comes, also when versionIds are opaque (no number to go by)."""
    copies = [resource("a", T2, "W/b", status="mid"), resource("a", T3, "W/a", status="new"), resource("a", T1, "W/c")]
    assert wh.upsert(land(zone, copies)).inserted == 1
    assert _row(wh, "a")[0] == "W/a" and '"new"' in str(_row(wh, "a")[3])


def test_bdx21_tombstone_soft_deletes_and_is_idempotent(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T1), resource("b", T1)]))
    deleted_at = datetime(2026, 1, 5, tzinfo=UTC)
    assert wh.tombstone("c1", "Observation", ["a"], deleted_at) == 1
    assert wh.tombstone("c1", "Observation", ["a"], deleted_at) == 0
    assert wh.live_ids("c1", "Observation") == {"b"}
    assert _row(wh, "a")[2] == deleted_at
    assert wh.summary() == [{"connection_id": "c1", "resource_type": "Observation", "live": 1, "deleted": 1}]


def test_bdx21_older_copy_does_not_resurrect_but_newer_revives(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T1)]))
    wh.tombstone("c1", "Observation", ["a"], datetime(2026, 1, 2, tzinfo=UTC))
    replay = wh.upsert(land(zone, [resource("a", T1)], run_id="r2"))
    assert replay == UpsertStats(inserted=0, updated=0, unchanged=1)
    same_instant = wh.upsert(land(zone, [resource("a", T2, "2")], run_id="r3"))
    assert same_instant.updated == 0
    assert wh.live_ids("c1", "Observation") == set()
    revived = wh.upsert(land(zone, [resource("a", T3, "3")], run_id="r4"))
    assert revived == UpsertStats(inserted=0, updated=1, unchanged=0)
    assert wh.live_ids("c1", "Observation") == {"a"}
    assert _row(wh, "a")[2] is None


def test_bdx21_tombstone_of_unknown_id_blocks_a_late_older_copy(wh: Warehouse, zone: LandingZone) -> None:
    assert wh.tombstone("c1", "Observation", ["ghost", "ghost"], datetime(2026, 1, 2, tzinfo=UTC)) == 1
    assert wh.upsert(land(zone, [resource("ghost", T1)])).inserted == 0
    assert wh.live_ids("c1", "Observation") == set()


def test_bdx21_tombstone_never_deletes_a_newer_version(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a", T3)]))
    assert wh.tombstone("c1", "Observation", ["a"], datetime(2026, 1, 2, tzinfo=UTC)) == 0
    assert wh.live_ids("c1", "Observation") == {"a"}


DELETED_AT = datetime(2026, 1, 2, 12, tzinfo=UTC)


def _deleted_copy_without_last_updated(wh: Warehouse, zone: LandingZone) -> None:
    """``a`` served without ``lastUpdated`` (a server that never sends it), then tombstoned at ``DELETED_AT``."""
    wh.upsert(land(zone, [resource("a", None, None, status="old")], transaction_time=datetime(2026, 1, 1, tzinfo=UTC)))
    assert wh.tombstone("c1", "Observation", ["a"], DELETED_AT) == 1


def test_bdx21_copy_without_last_updated_answered_after_the_deletion_revives(wh: Warehouse, zone: LandingZone) -> None:
    """Re-created on a server that sends no ``lastUpdated`` (or the deletion was wrong): the copy the server
    answered after the deletion is live again, with its content. Before, the tombstone stayed forever."""
    _deleted_copy_without_last_updated(wh, zone)
    after = DELETED_AT + timedelta(milliseconds=1)
    revived = wh.upsert(land(zone, [resource("a", None, None, status="back")], run_id="r2", transaction_time=after))
    assert revived == UpsertStats(inserted=0, updated=1, unchanged=0)
    assert wh.live_ids("c1", "Observation") == {"a"}
    _, last_updated, deleted_at, doc = _row(wh, "a")
    assert (last_updated, deleted_at) == (None, None) and '"back"' in str(doc)
    # a replay of the copy changes nothing; the placeholder of an id never seen is revived the same way
    assert wh.upsert(land(zone, [resource("a", None, None, status="back")], run_id="r3", transaction_time=after)) == (
        UpsertStats(inserted=0, updated=0, unchanged=1)
    )
    assert wh.tombstone("c1", "Observation", ["ghost"], DELETED_AT) == 1
    assert wh.upsert(land(zone, [resource("ghost", None, "1")], run_id="r4", transaction_time=after)).updated == 1
    assert wh.live_ids("c1", "Observation") == {"a", "ghost"}


@pytest.mark.parametrize(
    "answered_at",
    [DELETED_AT - timedelta(days=1), DELETED_AT, None],
    ids=["before-the-deletion", "at-the-deletion", "unknown"],
)
def test_bdx21_copy_without_last_updated_answered_before_the_deletion_stays_deleted(
    wh: Warehouse, zone: LandingZone, answered_at: datetime | None
) -> None:
    """A copy the server answered at or before the deletion (an older export landed late), or one whose file does
    not say when (landed before REST searches recorded it), never revives the tombstone."""
    _deleted_copy_without_last_updated(wh, zone)
    late = land(zone, [resource("a", None, None, status="late")], run_id="r2", transaction_time=answered_at)
    assert wh.upsert(late) == UpsertStats(inserted=0, updated=0, unchanged=1)
    assert wh.live_ids("c1", "Observation") == set()
    assert _row(wh, "a")[2] == DELETED_AT and '"old"' in str(_row(wh, "a")[3])


@pytest.mark.parametrize(
    ("last_updated", "answered_at", "revived"),
    [
        (T2, DELETED_AT + timedelta(days=5), True),  # unchanged on the server: the tombstone was wrong
        (T3, None, True),  # newer than the deletion: revives whenever it was answered
        (T1, DELETED_AT + timedelta(days=5), False),  # older than the version the tombstone replaced
        (T2, DELETED_AT, False),  # answered at the deletion
        (T2, DELETED_AT - timedelta(hours=1), False),  # answered before it (a late, older export)
        (T2, None, False),  # when it was answered is not known (a referenced resource's read)
    ],
    ids=["unchanged-after", "newer-unknown", "older-after", "at", "before", "unknown"],
)
def test_bdx21_a_copy_with_last_updated_revives_when_newer_or_answered_after_the_deletion(
    wh: Warehouse, zone: LandingZone, last_updated: str, answered_at: datetime | None, revived: bool
) -> None:
    """A copy with ``lastUpdated`` revives by a ``lastUpdated`` after the deletion, as ever, or, unchanged since,
    by having been answered after it: the server still had it, so the deletion was wrong (a BDX-31 listing that
    missed it without saying so). Before, only the first: an unchanged resource wrongly tombstoned stayed deleted
    for good. A copy older than the version the tombstone replaced never revives."""
    wh.upsert(land(zone, [resource("a", T2, "2")]))
    assert wh.tombstone("c1", "Observation", ["a"], DELETED_AT) == 1
    copy = land(zone, [resource("a", last_updated, "9", status="again")], run_id="r2", transaction_time=answered_at)
    assert wh.upsert(copy).updated == (1 if revived else 0)
    assert wh.live_ids("c1", "Observation") == ({"a"} if revived else set())


@pytest.mark.parametrize("last_updated", [None, T1], ids=["no-last-updated", "older-last-updated"])
@pytest.mark.parametrize("answered_at", [DELETED_AT + timedelta(milliseconds=1), DELETED_AT, None])
def test_bdx21_tombstone_spares_a_copy_answered_after_it(
    wh: Warehouse, zone: LandingZone, answered_at: datetime | None, last_updated: str | None
) -> None:
    """The tombstone's side of the revival rule: a copy (without ``lastUpdated``, or one from before the deletion)
    that the server answered after the deletion stays live when the deletion is applied after it (a Bulk export's
    ``deleted`` entries apply after its output files: deleted, then re-created, within one export window), as the
    same copy applied after the tombstone revives it; the order the two arrive in no longer decides. At or before
    the deletion, or unknown: tombstoned as before."""
    wh.upsert(land(zone, [resource("a", last_updated, None, status="back")], transaction_time=answered_at))
    tombstoned = wh.tombstone("c1", "Observation", ["a"], DELETED_AT)
    spared = answered_at is not None and answered_at > DELETED_AT
    assert tombstoned == (0 if spared else 1)
    assert wh.live_ids("c1", "Observation") == ({"a"} if spared else set())


def test_tombstone_rejects_naive_datetime(wh: Warehouse) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        wh.tombstone("c1", "Observation", ["a"], datetime(2026, 1, 2))


def test_upsert_keys_include_connection_and_type(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("x")]))
    other = wh.upsert(land(zone, [resource("x")], connection_id="c2"))
    patient = wh.upsert(land(zone, [resource("x", resource_type="Patient")], resource_type="Patient"))
    assert other.inserted == 1 and patient.inserted == 1
    assert {(s["connection_id"], s["resource_type"]) for s in wh.summary()} == {
        ("c1", "Observation"),
        ("c2", "Observation"),
        ("c1", "Patient"),
    }


def test_upsert_refuses_missing_or_foreign_file(wh: Warehouse, zone: LandingZone, tmp_path) -> None:
    landed = land(zone, [resource("a")])
    with pytest.raises(LandedFileError, match="another connection"):
        wh.upsert(landed.__class__(**{**landed.__dict__, "connection_id": "c9"}))
    landed.path.unlink()
    with pytest.raises(LandedFileError, match="does not exist"):
        wh.upsert(landed)
    assert wh.live_ids("c1", "Observation") == set()


def test_empty_file_upserts_nothing(wh: Warehouse, zone: LandingZone) -> None:
    assert wh.upsert(land(zone, [])) == UpsertStats(0, 0, 0)


def test_bdx24_concurrent_upserts_of_one_partition_count_exactly(wh: Warehouse, zone: LandingZone) -> None:
    """Separate warehouse handles (as separate run processes would hold) racing on the same ids: every id is
    inserted exactly once in total and the final table holds the newest version."""
    target = str(wh.path) if isinstance(wh, DuckDBWarehouse) else cast(PostgresWarehouse, wh).url
    files = [
        land(zone, [resource(f"o{i}", f"2026-01-0{n + 1}T00:00:00Z", str(n)) for i in range(400)], run_id=f"r{n}")
        for n in range(3)
    ]

    def run(landed: LandedFile) -> UpsertStats:
        with open_warehouse(target) as own:
            return own.upsert(landed)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, files))
    assert sum(r.inserted for r in results) == 400
    assert all(r.inserted + r.updated + r.unchanged == 400 for r in results)
    assert {row["version_id"] for row in wh.iter_rows("SELECT DISTINCT version_id FROM fhir_resources")} == {"2"}


def test_key_counts_include_tombstones_and_count_in_sql(wh: Warehouse, zone: LandingZone) -> None:
    wh.upsert(land(zone, [resource("a"), resource("b"), resource("c")]))
    wh.upsert(land(zone, [resource("p1", resource_type="Patient")], resource_type="Patient", run_id="r2"))
    wh.tombstone("c1", "Observation", ["b", "never-seen"], datetime(2026, 2, 1, tzinfo=UTC))
    assert wh.key_counts("c1", "Observation") == KeyCounts(rows=4, keys=4, live=2)
    assert wh.key_counts("c1") == KeyCounts(rows=5, keys=5, live=3)
    assert wh.key_counts("other") == KeyCounts(rows=0, keys=0, live=0)


def test_duckdb_key_counts_expose_a_duplicated_key(tmp_path, zone: LandingZone) -> None:
    """DuckDB keeps no index on the key: the duplicate-key asset check is what would notice a broken merge."""
    with open_warehouse(tmp_path / "dup.duckdb") as wh:
        wh.upsert(land(zone, [resource("a"), resource("b")]))
        with wh._write("test") as cur:
            cur.execute("INSERT INTO fhir_resources SELECT * FROM fhir_resources WHERE id = 'a'")
        counts = wh.key_counts("c1", "Observation")
        assert (counts.rows, counts.keys, counts.duplicates) == (3, 2, 1)


def test_resource_columns_name_the_table_in_order(wh: Warehouse) -> None:
    """``_sql.RESOURCE_COLUMNS`` (used by the schema-2 migration's copy) stays in step with the DDL."""
    rows = wh.iter_rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'fhir_resources' "
        "ORDER BY ordinal_position"
    )
    assert tuple(r["column_name"] for r in rows) == _sql.RESOURCE_COLUMNS


@pytest.mark.parametrize(
    ("last_updated", "answered_at", "replaced"),
    [
        (None, DELETED_AT - timedelta(days=1), False),  # an older export landed after a newer search
        (None, DELETED_AT + timedelta(days=1), True),  # answered later: the newer copy
        (None, None, True),  # when it was answered is not known: the last landed wins, as before
        (T1, DELETED_AT - timedelta(days=1), False),  # equal lastUpdated, other content, answered earlier
    ],
    ids=["no-last-updated-earlier", "no-last-updated-later", "no-last-updated-unknown", "equal-earlier"],
)
def test_bdx24_a_copy_the_server_answered_before_the_stored_one_does_not_replace_it(
    wh: Warehouse, zone: LandingZone, last_updated: str | None, answered_at: datetime | None, replaced: bool
) -> None:
    """Without a newer ``lastUpdated`` to go by (none sent, or equal), the copy the server answered later stays:
    a late, older export no longer replaces what a newer search stored. Before, the last copy landed won."""
    stored = land(zone, [resource("a", last_updated, None, status="newer")], transaction_time=DELETED_AT)
    wh.upsert(stored)
    late = land(zone, [resource("a", last_updated, None, status="older")], run_id="r2", transaction_time=answered_at)
    assert wh.upsert(late).updated == (1 if replaced else 0)
    assert ('"older"' if replaced else '"newer"') in str(_row(wh, "a")[3])
