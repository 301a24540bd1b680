"""Landing-file retention (engine.landing_retention): merged files go after N days, never one not merged yet
(a pending landing handoff, a resumable Bulk export's landed file), and a connection being synced is skipped."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson

from engine import hold_connection, land_resource_type, run_bulk_export, upsert_resource_type
from engine.handoff import landed_to_json
from engine.landing_retention import needed_landing_files, prune_landing
from engine.models import BulkJob, BulkJobFile, utcnow
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, make_environment
from tests.engine.job_runs import run_sync
from tests.running_sync import sync_holding_the_lock

TYPES = ["Patient", "Condition"]


def _files(world: SyncWorld, connection_id: str) -> set[Path]:
    return set((Path(world.env.zone.root) / connection_id).glob("*/*.parquet"))


def _age(paths: set[Path], days: float) -> None:
    when = time.time() - days * 86_400
    for path in paths:
        os.utime(path, (when, when))


def _warehouse_rows(world: SyncWorld, connection_id: str) -> int:
    with world.env.warehouse() as wh:
        return wh.key_counts(connection_id).live


def _land_only(world: SyncWorld, connection_id: str, resource_type: str) -> str:
    """A landing step whose upsert has not run yet (its handoff is pending in sync_cursors)."""
    run_id = uuid.uuid4().hex
    with hold_connection(world.env, connection_id, run_id):
        land_resource_type(world.env, connection_id, resource_type, run_id)
    return run_id


def test_merged_files_go_after_the_retention_period(world, shared_sb, http):
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=TYPES).status == "completed"
    merged = _files(world, conn)
    rows = _warehouse_rows(world, conn)
    assert merged and rows

    kept = prune_landing(world.env.db, world.env.zone.root, keep_days=7)
    assert (kept.files_deleted, kept.files_recent) == (0, len(merged)) and _files(world, conn) == merged

    _age(merged, 8)
    pruned = prune_landing(world.env.db, world.env.zone.root, keep_days=7)
    assert (pruned.files_deleted, pruned.files_needed, pruned.connections) == (len(merged), 0, 1)
    assert pruned.bytes_deleted > 0 and not (Path(world.env.zone.root) / conn).exists()
    assert _warehouse_rows(world, conn) == rows  # the warehouse keeps the data
    assert run_sync(world, conn, types=TYPES).status == "completed"  # and the next sync lands as before


def test_a_file_not_merged_yet_is_kept_whatever_its_age(world, shared_sb, http):
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=TYPES).status == "completed"
    merged = _files(world, conn)
    run_id = _land_only(world, conn, "Encounter")  # landed, upsert not run yet
    pending = _files(world, conn) - merged
    assert len(pending) == 1
    _age(merged | pending, 30)

    report = prune_landing(world.env.db, world.env.zone.root, keep_days=0)

    assert (report.files_deleted, report.files_needed) == (len(merged), 1)
    assert _files(world, conn) == pending
    with hold_connection(world.env, conn, run_id):  # the upsert still finds its file
        assert upsert_resource_type(world.env, conn, "Encounter", run_id).created > 0
    assert prune_landing(world.env.db, world.env.zone.root, keep_days=0).files_deleted == 1
    assert _files(world, conn) == set()


def test_a_resumable_bulk_exports_landed_file_is_kept(world, shared_sb, http):
    """A ``landed`` file of a ``downloading`` export waits for its upsert when the export resumes (BDX-08)."""
    conn = connect_patient(world, shared_sb, http=http)
    with world.env.zone.writer(conn, "Observation", "bulk-run", "https://ehr.example/bulk/1.ndjson", seq="bulk-1") as w:
        w.add_resource({"resourceType": "Observation", "id": "o1", "meta": {"lastUpdated": "2025-01-01T00:00:00Z"}})
    landed = w.result
    _save_bulk_file(world, conn, "downloading", orjson.dumps(landed_to_json(landed)).decode())
    _age({Path(landed.path)}, 30)

    assert Path(landed.path).resolve() in (needed_landing_files(world.env.db, conn) or set())
    report = prune_landing(world.env.db, world.env.zone.root, keep_days=0)
    assert (report.files_deleted, report.files_needed) == (0, 1) and Path(landed.path).is_file()

    with world.env.db.session() as s, s.begin():  # the export failed for good: nothing will resume it
        s.query(BulkJob).filter(BulkJob.connection_id == conn).update({"status": "failed"})
    assert prune_landing(world.env.db, world.env.zone.root, keep_days=0).files_deleted == 1


def _save_bulk_file(world: SyncWorld, conn: str, status: str, landed_path: str) -> None:
    job_id = uuid.uuid4().hex
    with world.env.db.session() as s, s.begin():
        s.add(
            BulkJob(
                id=job_id, connection_id=conn, run_id="bulk-run", stream="bulk:patient:", type_key="*",
                level="patient", types=[], kickoff_url="https://ehr.example/$export",
                status_url="https://ehr.example/status/1", params={}, requested_at=utcnow(), status=status,
                updated_at=utcnow(),
            )
        )  # fmt: skip
        s.flush()
        s.add(
            BulkJobFile(
                job_id=job_id, kind="output", resource_type="Observation", url="https://ehr.example/bulk/1.ndjson",
                state="landed", landed_path=landed_path, rows=1, bytes=1, quarantined=0, attempts=1,
                updated_at=utcnow(),
            )
        )  # fmt: skip


def test_an_unreadable_handoff_keeps_every_file_of_its_connection(world, shared_sb, http):
    from engine.models import SyncCursor

    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=TYPES).status == "completed"
    files = _files(world, conn)
    _age(files, 30)
    with world.env.db.session() as s, s.begin():
        unreadable = {"version": 99}  # a handoff written by a newer engine
        s.add(
            SyncCursor(
                connection_id=conn, stream="rest", resource_type="Encounter", pending_run_id="r", pending=unreadable
            )
        )
    report = prune_landing(world.env.db, world.env.zone.root, keep_days=0)
    assert (report.connections_unreadable, report.files_deleted) == (1, 0) and _files(world, conn) == files


def test_a_connection_being_synced_is_skipped(world, shared_sb, http):
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=TYPES).status == "completed"
    files = _files(world, conn)
    _age(files, 30)
    with sync_holding_the_lock(world.env.zone.root, conn, "a-sync"):
        report = prune_landing(world.env.db, world.env.zone.root, keep_days=0)
    assert (report.connections_busy, report.files_deleted) == (1, 0) and _files(world, conn) == files
    assert prune_landing(world.env.db, world.env.zone.root, keep_days=0).files_deleted == len(files)


def test_retention_zero_deletes_a_rest_landing_once_merged(tmp_path, shared_sb, http):
    """EHRSYNC_LANDING_RETENTION_DAYS=0: the file stays while its upsert is pending and goes with its commit."""
    world = make_environment(tmp_path / "zero", http=http, landing_retention_days=0)
    conn = connect_patient(world, shared_sb, http=http)
    run_id = _land_only(world, conn, "Condition")
    assert len(_files(world, conn)) == 1
    with hold_connection(world.env, conn, run_id):
        assert upsert_resource_type(world.env, conn, "Condition", run_id).created > 0
    assert _files(world, conn) == set() and _warehouse_rows(world, conn) > 0


def test_retention_zero_deletes_each_bulk_file_once_merged(tmp_path, shared_sb, http):
    world = make_environment(tmp_path / "zero", http=http, landing_retention_days=0)
    conn = connect_backend(world, shared_sb, http=http, group_id="grp2")
    assert run_bulk_export(world.env, conn, "bulk-run-1").status == "completed"
    assert not any((Path(world.env.zone.root) / conn).rglob("*.parquet"))
    assert _warehouse_rows(world, conn) > 0
