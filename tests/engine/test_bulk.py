"""Bulk export of group/backend connections against the sandbox: resumable, idempotent (BDX-08..24)."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from engine import cursors, run_bulk_export, runs
from engine.models import BulkJob
from tests.engine.helpers import add_fault, connect_backend, content_fingerprint, make_environment, mutate
from tests.engine.test_crash import _run_child


def _live(world, connection_id):
    with world.env.warehouse() as wh:
        return {r["resource_type"]: r["live"] for r in wh.summary() if r["connection_id"] == connection_id}


@pytest.fixture(scope="module")
def clean_export():
    """Content of one undisturbed export per group of the module's sandbox, computed on first use."""
    cache: dict[str, list[Any]] = {}

    def content(sandbox, group_id, root):
        if group_id not in cache:
            with httpx.Client(timeout=30.0) as http:
                clean = make_environment(root / f"clean-{group_id}", http=http)
                conn = connect_backend(clean, sandbox, http=http, group_id=group_id)
                assert run_bulk_export(clean.env, conn, "clean").status == "completed"
            cache[group_id] = content_fingerprint(clean.env.warehouse_target, with_connection=False)
        return cache[group_id]

    return content


def _jobs(world, connection_id):
    with world.env.db.session() as session:
        return session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all()


def test_group_export_lands_everything_and_since_is_transaction_time_bdx14(world, shared_sb, http, request_log):
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    report = run_bulk_export(world.env, conn, "bulk-run-1")
    assert report.status == "completed", report.error
    assert report.files > 0 and report.transaction_time is not None and not report.resumed
    assert report.types["Patient"].created == 2  # grp0 = every sandbox patient
    assert report.types["Observation"].created > 0
    live = _live(world, conn)
    assert {t: r.created for t, r in report.types.items() if r.created} == {t: n for t, n in live.items() if n}
    stream = cursors.bulk_stream("group", "grp0")
    assert cursors.get_mark(world.env.db, conn, stream, "*") == report.transaction_time
    assert request_log.paths("/bulk/status", method="DELETE"), "BDX-11: the status URL is deleted after landing"
    assert runs.require(world.env.db, "bulk-run-1").status == "completed"
    assert not list((world.env.zone.root / ".bulk-tmp").glob("*/*")), "downloaded temp files are removed"

    request_log.clear()
    again = run_bulk_export(world.env, conn, "bulk-run-2")
    assert again.status == "completed", again.error
    kickoff = request_log.paths("/fhir/Group/grp0/$export")
    assert kickoff and kickoff[0].params["_since"].startswith(report.transaction_time.strftime("%Y-%m-%dT%H:%M:%S"))
    assert again.since == report.transaction_time
    assert sum(r.created + r.updated for r in again.types.values()) == 0


def test_deleted_file_entries_become_tombstones_bdx21(start_sandbox, world, http):
    sb = start_sandbox(patients=2)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    changes = mutate(http, sb, delete=3)
    report = run_bulk_export(world.env, conn, "second")
    assert report.status == "completed", report.error
    deleted = Counter(ref.split("/")[0] for ref in changes["deleted"])
    assert {t: r.deleted for t, r in report.types.items() if r.deleted} == dict(deleted)
    with world.env.warehouse() as wh:
        for ref in changes["deleted"]:
            rtype, rid = ref.split("/")
            assert rid not in wh.live_ids(conn, rtype)


def test_bdx21_a_deleted_line_whose_entry_is_a_bare_object_is_quarantined_not_dropped(start_sandbox, world, http):
    """A ``deleted`` file whose Bundles write their one DELETE entry as the bare object (``bulk_deleted_shape``, a
    naive XML-to-JSON converter): each such line is refused as malformed and quarantined, as a line that is not a
    Bundle is, never read as a Bundle without entries (its deletions dropped with nothing to show for it), and the
    run's Bundle report warns that those deletions were not applied."""
    sb = start_sandbox(patients=2)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    changes = mutate(http, sb, delete=3)
    add_fault(http, sb, "bulk_deleted_shape", times=1)
    report = run_bulk_export(world.env, conn, "second")
    assert report.status == "completed", report.error
    assert sum(r.deleted for r in report.types.values()) == 0  # nothing read from the refused lines
    assert report.types["Bundle"].quarantined == len(changes["deleted"]) == 3
    (warning,) = report.types["Bundle"].warnings  # said where a person reads the run, not only counted
    assert "3 line(s) or entries could not be read, their deletions not applied" in warning


def test_bdx21_a_resource_recreated_on_a_server_without_last_updated_is_live_again(start_sandbox, world, http):
    """A server that never sends ``meta.lastUpdated``: a resource an export's ``deleted`` file tombstoned, then
    re-created under its id, is live again once a later export (its ``transactionTime`` after the deletion) lists
    it. Before, only a newer ``lastUpdated`` lifted a tombstone, so it stayed deleted for good."""
    sb = start_sandbox(patients=2, omit_last_updated=True)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    (ref,) = mutate(http, sb, delete=1)["deleted"]
    rtype, rid = ref.split("/")
    second = run_bulk_export(world.env, conn, "second")
    assert second.status == "completed" and second.types[rtype].deleted == 1
    with world.env.warehouse() as wh:
        assert rid not in wh.live_ids(conn, rtype)
    assert sb.admin.restore(ref) == [ref]
    third = run_bulk_export(world.env, conn, "third")
    assert third.status == "completed", third.error
    assert third.types[rtype].updated == 1
    with world.env.warehouse() as wh:
        assert rid in wh.live_ids(conn, rtype)
        sql = "SELECT last_updated, transaction_time FROM fhir_resources WHERE connection_id = %s AND id = %s"
        (row,) = wh.iter_rows(sql, (conn, rid))
    assert row == {"last_updated": None, "transaction_time": third.transaction_time}


def test_file_gone_reruns_export_from_same_since_bdx19(tmp_path, shared_sb, clean_export, http):
    world = make_environment(tmp_path / "gone", http=http)
    conn = connect_backend(world, shared_sb, http=http, group_id="grp1")
    add_fault(http, shared_sb, "bulk_410", path="/bulk/files", times=1)
    report = run_bulk_export(world.env, conn, "with-410")
    assert report.status == "completed", report.error
    assert report.reruns == 1
    assert [j.status for j in sorted(_jobs(world, conn), key=lambda j: j.requested_at)] == ["abandoned", "completed"]
    expected = clean_export(shared_sb, "grp1", tmp_path)
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == expected


@pytest.mark.parametrize(
    ("kind", "options"), [("429", {"retry_after": "1"}), ("500", {}), ("drop", {}), ("expired_token", {})]
)
def test_bulk_download_faults_lose_nothing(tmp_path, shared_sb, clean_export, http, request_log, kind, options):
    world = make_environment(tmp_path / "faulty", http=http)
    conn = connect_backend(world, shared_sb, http=http, group_id="grp2")
    add_fault(http, shared_sb, kind, path="/bulk/files", **options)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "f")
    assert report.status == "completed", report.error
    if kind == "expired_token":  # a token rejected mid-download is re-minted (backend services), not fatal
        assert len(request_log.paths("/oauth/token", method="POST")) >= 2
    expected = clean_export(shared_sb, "grp2", tmp_path)
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == expected


def test_malformed_lines_are_quarantined_and_counted(world, shared_sb, http):
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    add_fault(http, sb, "bulk_mixed_type", times=1)
    report = run_bulk_export(world.env, conn, "mixed")
    assert report.status == "completed", report.error
    assert sum(r.quarantined for r in report.types.values()) >= 1


def test_files_without_access_token_are_fetched_without_one_bdx16(start_sandbox, world, http, request_log):
    sb = start_sandbox(requires_access_token=False)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    report = run_bulk_export(world.env, conn, "no-token")
    assert report.status == "completed", report.error
    file_requests = request_log.with_token("/bulk/files")
    assert file_requests and not any(file_requests)


# Before the first poll (BDX-08), with one file landed but not upserted, and with files already upserted.
@pytest.mark.parametrize("crash_at", ["bulk.kicked_off", "bulk.file_landed:2", "bulk.file_upserted:3"])
def test_killed_export_resumes_the_same_job_bdx08(tmp_path, shared_sb, clean_export, http, crash_at):
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")

    killed = _run_child(root, world, conn, "bulk", crash_at, "run-killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    report = run_bulk_export(world.env, conn, "run-resumed")
    assert report.status == "completed", report.error
    assert report.resumed
    assert len(_jobs(world, conn)) == 1, "the saved status URL is polled again, no second export"
    expected = clean_export(shared_sb, "grp0", tmp_path)
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == expected


def test_downloads_run_in_parallel_but_landings_are_bounded(world, shared_sb, http, monkeypatch):
    """BDX-18 keeps 4 parallel downloads; parsing into Parquet (where a file's memory goes) is capped by
    ``bulk_landing_concurrency``."""
    import threading
    import time as _time

    import warehouse
    from engine import bulk_fetch

    real = warehouse.land_ndjson_file  # what bulk_fetch calls
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    def counting(*args, **kwargs):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            _time.sleep(0.05)  # widen the window so overlapping landings would show
            return real(*args, **kwargs)
        finally:
            with lock:
                active["now"] -= 1

    monkeypatch.setattr(bulk_fetch, "land_ndjson_file", counting)
    world.env.bulk_landing_concurrency = 2  # the bound under test (the default is 1 on 2 cores, engine.cores)
    assert world.env.bulk_concurrency == 4
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    report = run_bulk_export(world.env, conn, "bounded")
    assert report.status == "completed", report.error
    assert report.files > 4
    assert active["max"] == 2


def test_gzip_encoded_files_land_exactly_as_plain_ones_bdx17(start_sandbox, tmp_path, http):
    """The sandbox gzips file downloads (``bulk_gzip``): ehrsync inflates them a bounded piece at a time
    (``connectors/transport/decoding.py``) and lands exactly what the same export lands uncompressed."""
    sb = start_sandbox(patients=3)
    fingerprints = []
    for gzipped in (False, True):
        sb.admin.settings(bulk_gzip=gzipped)
        world = make_environment(tmp_path / f"gzip-{gzipped}", http=http)
        conn = connect_backend(world, sb, http=http, group_id="grp0")
        report = run_bulk_export(world.env, conn, f"gzip-{gzipped}")
        assert report.status == "completed", report.error
        assert not report.count_mismatches
        fingerprints.append(content_fingerprint(world.env.warehouse_target, with_connection=False))
    assert fingerprints[0] == fingerprints[1] and fingerprints[0]
