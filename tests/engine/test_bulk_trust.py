"""Bulk exports never lose data silently (issue 10), against the sandbox over real sockets:

- a manifest ``error`` file reporting a failed type holds ``_since`` and the next run fetches the type (BDX-22/14);
- a streak of failing status polls leaves the job resumable at the same status URL (BDX-08/09);
- a truncated file is fetched again instead of quarantining its cut line (BDX-20);
- a file over the byte limit fails that file, a disk below its reserve the run; each resumes once fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import ConfigurationError
from engine import cursors, run_bulk_export, runs
from engine.bulk_members import MEMBERS_KEY, members_stream
from engine.models import BulkJob
from engine.setting_defaults import DEFAULT_BULK_MAX_FILE_BYTES, DEFAULT_MIN_FREE_DISK_BYTES
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend, content_fingerprint, make_environment

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)


def _clean(sb: SandboxServer, root: Path) -> list[Any]:
    """Warehouse content of one undisturbed export of the group (a separate world, same sandbox)."""
    with httpx.Client(timeout=30.0) as http:
        clean = make_environment(root / "clean", http=http)
        conn = connect_backend(clean, sb, http=http, group_id=GROUP)
        report = run_bulk_export(clean.env, conn, "clean")
        assert report.status == "completed", report.error
    return content_fingerprint(clean.env.warehouse_target, with_connection=False)


def _jobs(world: SyncWorld, connection_id: str) -> list[BulkJob]:
    with world.env.db.session() as session:
        rows = session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all()
        return sorted(rows, key=lambda j: j.requested_at)


def _live(world: SyncWorld, connection_id: str) -> dict[str, int]:
    with world.env.warehouse() as wh:
        return {r["resource_type"]: r["live"] for r in wh.summary() if r["connection_id"] == connection_id}


def test_error_file_naming_a_type_holds_since_and_the_next_run_fetches_it_bdx22(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_error_file", resource_type="Observation", path="/fhir/Group", times=1)
    first = run_bulk_export(world.env, conn, "with-error-file")
    assert first.status == "partial" and first.incomplete_types == ["Observation"]
    assert first.error is not None and "bulk_export_incomplete" in first.error and "Observation" in first.error
    assert first.error_issues.get("fatal") == 1
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since never passes data not received"
    assert runs.require(world.env.db, "with-error-file").status == "failed"
    assert _jobs(world, conn)[0].status == "incomplete"
    live = _live(world, conn)
    assert live.get("Patient") == 2 and not live.get("Observation"), "good files land, the failed type is missing"

    request_log.clear()
    second = run_bulk_export(world.env, conn, "after-fault")
    assert second.status == "completed", second.error
    kickoffs = request_log.paths(f"/fhir/Group/{GROUP}/$export")
    assert kickoffs and "_since" not in kickoffs[0].params, "the next export asks again from the held mark"
    assert second.types["Observation"].created > 0
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") == second.transaction_time
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_incremental_export_with_an_error_file_keeps_the_old_since_bdx14(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    mark = cursors.get_mark(world.env.db, conn, STREAM, "*")
    assert mark is not None
    add_fault(http, sb, "bulk_error_file", resource_type="Condition", path="/fhir/Group", times=1)
    partial = run_bulk_export(world.env, conn, "second")
    assert partial.status == "partial" and partial.incomplete_types == ["Condition"]
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") == mark
    request_log.clear()
    third = run_bulk_export(world.env, conn, "third")
    assert third.status == "completed", third.error
    kickoff = request_log.paths(f"/fhir/Group/{GROUP}/$export")[0]
    assert kickoff.params["_since"].startswith(mark.strftime("%Y-%m-%dT%H:%M:%S"))


@pytest.mark.parametrize(
    ("kind", "options", "code"),
    [
        ("503", {"retry_after": ""}, "bulk_status_unavailable"),
        ("500", {"retry_after": ""}, "bulk_status_unavailable"),
        ("drop", {}, "transport_error"),
    ],
)
def test_status_failure_streak_leaves_the_job_resumable_at_the_same_url_bdx08(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    kind: str,
    options: dict[str, Any],
    code: str,
) -> None:
    """5xx answers or dropped connections beyond the retry policy: the job stays ``polling``, no new kick-off."""
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    attempts = world.env.retry.max_attempts if world.env.retry else 5
    add_fault(http, sb, kind, path="/bulk/status", times=attempts + 1, **options)
    first = run_bulk_export(world.env, conn, "flaky-status")
    assert first.status == "failed" and first.error is not None and code in first.error
    (job,) = _jobs(world, conn)
    assert job.status == "polling", "a polling hiccup is not a failed job"
    assert not request_log.paths("/bulk/status", method="DELETE"), "a job that may be alive is not cancelled"

    second = run_bulk_export(world.env, conn, "resumed")
    assert second.status == "completed", second.error
    assert second.resumed and second.job_id == job.id
    assert len(request_log.paths(f"/fhir/Group/{GROUP}/$export")) == 1, "no second kick-off"
    assert len(_jobs(world, conn)) == 1


def test_abandoned_job_gets_a_delete_on_its_status_url_bdx11(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    # the export runs ~6 s (3 s for each of 2 patients): at 0.5 s it was done within the second a loaded machine
    # may take between the kick-off and the first poll, and the run completed
    sb.admin.settings(bulk_throttle_s=3.0)
    try:
        world.env.bulk_deadline_s = 0.0  # past its deadline at the first poll
        report = run_bulk_export(world.env, conn, "too-slow")
    finally:
        sb.admin.reset_settings()
    assert report.status == "failed" and "not complete within" in (report.error or "")
    assert _jobs(world, conn)[0].status == "failed"
    assert len(request_log.paths("/bulk/status", method="DELETE")) == 1


def test_truncated_file_is_fetched_again_and_nothing_is_quarantined_bdx20(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_truncated", path="/bulk/files", times=2)
    report = run_bulk_export(world.env, conn, "cut")
    assert report.status == "completed", report.error
    assert sum(r.quarantined for r in report.types.values()) == 0, "a truncation is not bad data"
    assert report.count_mismatches == []
    files = {u.path for u in request_log.paths("/bulk/files")}
    assert len(request_log.paths("/bulk/files")) == len(files) + 2, "each cut file was fetched once more"
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_manifest_count_above_the_file_holds_since_and_the_next_run_completes_bdx20(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """Issue 10: a file with fewer resources than its manifest ``count`` (``bulk_wrong_count``: the count is one
    more) may have been cut at a line boundary: fetched again, then its type is incomplete and ``_since`` held."""
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_wrong_count", path="/bulk/files/", times=1)
    first = run_bulk_export(world.env, conn, "short-count")
    assert first.status == "partial" and len(first.incomplete_types) == 1, first.error
    (short_type,) = first.incomplete_types
    assert first.error is not None and "bulk_export_incomplete" in first.error and short_type in first.error
    (mismatch,) = first.count_mismatches
    paths = [u.path for u in request_log.paths("/bulk/files")]
    assert max(paths.count(p) for p in paths) == 3, "the short file was fetched again, 3 attempts in all"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since never passes data not received"
    assert runs.require(world.env.db, "short-count").status == "failed"

    second = run_bulk_export(world.env, conn, "counted")
    assert second.status == "completed", second.error
    assert second.count_mismatches == [] and mismatch
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") == second.transaction_time
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_file_truncated_on_every_attempt_fails_clearly_and_resumes(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_truncated", path="/bulk/files", times=None)
    first = run_bulk_export(world.env, conn, "always-cut")
    assert first.status == "failed" and "bulk_file_truncated" in (first.error or "")
    assert sum(r.quarantined for r in first.types.values()) == 0
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None
    sb.admin.clear_faults()
    second = run_bulk_export(world.env, conn, "fixed")
    assert second.status == "completed", second.error
    assert second.resumed
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_file_over_the_byte_limit_fails_and_is_fetched_once_the_limit_is_raised(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    world.env.bulk_max_file_bytes = 2000  # Observation files of the sandbox are larger than that
    first = run_bulk_export(world.env, conn, "limited")
    assert first.status == "failed"
    assert "bulk_file_too_large" in (first.error or "") and "2000-byte limit" in (first.error or "")
    assert "/bulk/files/" in (first.error or "") and "EHRSYNC_BULK_MAX_FILE_BYTES" in (first.error or "")
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None
    world.env.bulk_max_file_bytes = 10 * 1024**3
    second = run_bulk_export(world.env, conn, "raised")
    assert second.status == "completed", second.error
    assert second.resumed
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_downloads_stop_below_the_free_disk_reserve_and_resume(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    world.env.min_free_disk_bytes = 1 << 60  # an exabyte: no disk has that much free
    first = run_bulk_export(world.env, conn, "disk-full")
    assert first.status == "failed"
    assert "insufficient_disk_space" in (first.error or "") and "EHRSYNC_MIN_FREE_DISK_BYTES" in (first.error or "")
    assert not _live(world, conn).get("Patient")
    world.env.min_free_disk_bytes = 1
    second = run_bulk_export(world.env, conn, "disk-freed")
    assert second.status == "completed", second.error
    assert second.resumed
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_file_body_shorter_than_its_content_length_is_fetched_again(
    tmp_path: Path, shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """The server announces the whole file, sends half of it and hangs up: fetched again, nothing quarantined."""
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_short_body", path="/bulk/files", times=2)
    report = run_bulk_export(world.env, conn, "short")
    assert report.status == "completed", report.error
    assert sum(r.quarantined for r in report.types.values()) == 0 and report.count_mismatches == []
    assert len(request_log.paths("/bulk/files")) == len({u.path for u in request_log.paths("/bulk/files")}) + 2
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)


def test_limits_are_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EHRSYNC_BULK_MAX_FILE_BYTES / EHRSYNC_MIN_FREE_DISK_BYTES set the limits; a bad value names the variable."""
    defaults = make_environment(tmp_path / "defaults").env
    assert (defaults.bulk_max_file_bytes, defaults.min_free_disk_bytes) == (
        DEFAULT_BULK_MAX_FILE_BYTES,
        DEFAULT_MIN_FREE_DISK_BYTES,
    )
    monkeypatch.setenv("EHRSYNC_BULK_MAX_FILE_BYTES", "1048576")
    monkeypatch.setenv("EHRSYNC_MIN_FREE_DISK_BYTES", "0")
    env = make_environment(tmp_path / "set").env
    assert (env.bulk_max_file_bytes, env.min_free_disk_bytes) == (1048576, 0)
    monkeypatch.setenv("EHRSYNC_BULK_MAX_FILE_BYTES", "ten gigs")
    with pytest.raises(ConfigurationError, match="EHRSYNC_BULK_MAX_FILE_BYTES"):
        make_environment(tmp_path / "bad")


def test_new_members_export_with_an_error_file_keeps_them_new_bdx15(
    start_sandbox: Callable[..., SandboxServer], world: SyncWorld, http: httpx.Client
) -> None:
    """BDX-15 + BDX-22: when the new members' full export reports a failed type, they are not recorded as known,
    so the next run exports them again (their older records would never come with ``_since``)."""
    sb = start_sandbox(patients=4)
    group = "grp1"  # pat0 and pat2
    conn = connect_backend(world, sb, http=http, group_id=group)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    sb.admin.change_group_members(group, add=["pat1"])
    # pat0's records, so the main `_since` export has files whatever is picked: their events arm the fault after
    # its kick-off (random records could all be pat3's, outside the group: then nothing arms it in time)
    sb.admin.mutate(update=3, patients=["pat0"])
    armed: list[bool] = []

    def arm_after_the_main_kickoff(event: str, _detail: dict[str, Any]) -> None:
        if event == "bulk.file" and not armed:  # the id-only export, then the new members' export, get it
            armed.append(True)
            add_fault(http, sb, "bulk_error_file", resource_type="Observation", path="/fhir/Group", times=2)

    second = run_bulk_export(world.env, conn, "second", progress=arm_after_the_main_kickoff)
    assert armed and second.membership_checked and second.new_members == 1
    assert sb.admin.faults() == [], "both firings went to this run: the id-only export's, then the new members'"
    assert second.status == "partial" and second.incomplete_types == ["Observation"]
    held = cursors.get_data(world.env.db, conn, members_stream(group), MEMBERS_KEY)
    assert held is not None and "pat1" not in held["members"], "not recorded as known"
    third = run_bulk_export(world.env, conn, "third")
    assert third.status == "completed", third.error
    assert third.new_members == 1, "pat1 is still new: its full export is asked for again"
    pat1_observations = {r["id"] for r in sb.state.store.patient_resources(1, ("Observation",))}
    with world.env.warehouse() as wh:
        assert pat1_observations and pat1_observations <= wh.live_ids(conn, "Observation")
