"""BDX-15: group members added after an export get their older data; leavers are counted; all resumable."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from engine import cursors, run_bulk_export
from engine.bulk_members import MEMBERS_KEY, members_stream
from pipelines.defs._shared.metadata import bulk_report_metadata
from tests.engine.helpers import add_fault, connect_backend, make_environment
from tests.engine.test_crash import _run_child

GROUP = "grp1"  # with 4 patients: pat0 and pat2


@pytest.fixture
def sb4(start_sandbox):
    return start_sandbox(patients=4)


def _live(world, conn, rtype):
    with world.env.warehouse() as wh:
        return wh.live_ids(conn, rtype)


def _sandbox_ids(sb, index, rtype):
    return {r["id"] for r in sb.state.store.patient_resources(index, (rtype,))}


def test_new_member_older_data_lands_removed_member_counted_rerun_idempotent_bdx15(
    sb4, world, tmp_path, http, request_log
):
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    control = make_environment(tmp_path / "control", http=http, bulk_membership_check=False)
    control_conn = connect_backend(control, sb4, http=http, group_id=GROUP)

    first = run_bulk_export(world.env, conn, "first")
    assert first.status == "completed", first.error
    assert not first.membership_checked, "a first (full) export has every member's data already"
    assert run_bulk_export(control.env, control_conn, "c-first").status == "completed"
    assert _live(world, conn, "Patient") == {"pat0", "pat2"}

    # pat1's records are stamped before 2025-06-01, long before the first export's transactionTime
    assert sb4.admin.change_group_members(GROUP, add=["pat1"], remove=["pat2"]) == ["pat0", "pat1"]
    observations = _sandbox_ids(sb4, 1, "Observation")
    assert observations

    controlled = run_bulk_export(control.env, control_conn, "c-second")
    assert controlled.status == "completed", controlled.error
    assert "pat1" not in _live(control, control_conn, "Patient"), "the _since export alone misses the new member"
    assert not observations & _live(control, control_conn, "Observation")

    request_log.clear()
    second = run_bulk_export(world.env, conn, "second")
    assert second.status == "completed", second.error
    assert second.membership_checked and second.new_members == 1 and second.removed_members == 1
    assert second.since == first.transaction_time
    assert _live(world, conn, "Patient") == {"pat0", "pat1", "pat2"}, "leavers keep their data"
    assert observations <= _live(world, conn, "Observation")
    assert second.types["Observation"].created == len(observations)
    ids_export = [u for u in request_log.paths(f"/fhir/Group/{GROUP}/$export") if "_elements" in u.params]
    assert ids_export and ids_export[0].params["_elements"] == "id" and "_since" not in ids_export[0].params
    assert len(request_log.paths(f"/fhir/Group/{GROUP}/$export", method="POST")) == 1
    meta = bulk_report_metadata(second)
    assert meta["new_members"].value == 1 and meta["removed_members"].value == 1
    stored = cursors.get_data(world.env.db, conn, members_stream(GROUP), MEMBERS_KEY)
    assert stored == {"members": ["pat0", "pat1"], "removed": ["pat2"]}
    mark = cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", GROUP), "*")
    assert mark == second.transaction_time, "the main _since is the main export's transactionTime (BDX-14)"
    assert meta["high_water_mark"].value == mark.isoformat()  # the main mark it stored, not the follow-up's

    request_log.clear()
    third = run_bulk_export(world.env, conn, "third")
    assert third.status == "completed", third.error
    assert third.membership_checked and third.new_members == 0 and third.removed_members == 0
    assert sum(r.created + r.updated for r in third.types.values()) == 0
    assert not request_log.paths(f"/fhir/Group/{GROUP}/$export", method="POST")


def test_member_returning_after_leaving_is_exported_again_bdx15(sb4, world, http):
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    sb4.admin.change_group_members(GROUP, remove=["pat2"])
    left = run_bulk_export(world.env, conn, "left")
    assert (left.new_members, left.removed_members) == (0, 1)
    still = run_bulk_export(world.env, conn, "still-gone")  # counted once, but recorded until it comes back
    assert (still.new_members, still.removed_members) == (0, 0)
    stored = cursors.get_data(world.env.db, conn, members_stream(GROUP), MEMBERS_KEY)
    assert stored == {"members": ["pat0"], "removed": ["pat2"]}
    sb4.admin.change_group_members(GROUP, add=["pat2"])
    back = run_bulk_export(world.env, conn, "back")
    assert back.status == "completed", back.error
    assert (back.new_members, back.removed_members) == (1, 0)
    stored = cursors.get_data(world.env.db, conn, members_stream(GROUP), MEMBERS_KEY)
    assert stored == {"members": ["pat0", "pat2"], "removed": []}


def test_membership_check_can_be_turned_off_bdx15(sb4, world, http, request_log):
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    env = replace(world.env, bulk_membership_check=False)
    assert run_bulk_export(env, conn, "first").status == "completed"
    sb4.admin.change_group_members(GROUP, add=["pat1"])
    report = run_bulk_export(env, conn, "second")
    assert report.status == "completed" and not report.membership_checked and report.new_members == 0
    assert not [u for u in request_log.paths("/fhir/Group") if "_elements" in u.params]


# Killed after the new-members export was kicked off (3rd kick-off of the run: main, ids, members) and after
# it completed: the rerun resumes or repeats the step and ends with the member's data and the stored set.
@pytest.mark.parametrize("crash_at", ["bulk.kicked_off:3", "bulk.file_upserted:2"])
def test_killed_membership_step_resumes_bdx15(sb4, tmp_path, http, crash_at):
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    sb4.admin.change_group_members(GROUP, add=["pat1"])

    killed = _run_child(root, world, conn, "bulk", crash_at, "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    report = run_bulk_export(world.env, conn, "resumed")
    assert report.status == "completed", report.error
    assert report.new_members == 1
    assert _sandbox_ids(sb4, 1, "Observation") <= _live(world, conn, "Observation")
    stored = cursors.get_data(world.env.db, conn, members_stream(GROUP), MEMBERS_KEY)
    assert stored is not None and stored["members"] == ["pat0", "pat1", "pat2"]
    again = run_bulk_export(world.env, conn, "again")
    assert (again.new_members, again.removed_members) == (0, 0)


def test_a_new_members_export_left_unfinished_for_other_members_is_not_resumed_bdx15(sb4, tmp_path, http):
    """A run killed after kicking off the new members' export (``pat1``); the group gains ``pat3`` before the
    next run. That export names only ``pat1``: resumed, ``pat3`` would be stored as known with none of its older
    data. It is abandoned and a new one covers both."""
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    sb4.admin.change_group_members(GROUP, add=["pat1"])
    killed = _run_child(root, world, conn, "bulk", "bulk.kicked_off:3", "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    sb4.admin.change_group_members(GROUP, add=["pat3"])
    report = run_bulk_export(world.env, conn, "resumed")
    assert report.status == "completed", report.error
    assert report.new_members == 2
    live = _live(world, conn, "Observation")
    assert _sandbox_ids(sb4, 1, "Observation") <= live and _sandbox_ids(sb4, 3, "Observation") <= live


def test_a_line_of_another_type_in_the_member_id_file_is_no_member_bdx15(sb4, world, http):
    """The member-id export's Patient file carries a stray line of another type (``bulk_mixed_type``: a Basic
    with an id): its id is no group member. The step fails naming the line, as for a line without an id; before,
    the Basic's id was counted a new member and its export's kick-off (``patient=Patient/<that id>``) refused."""
    conn = connect_backend(world, sb4, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "first").status == "completed"
    add_fault(http, sb4, "bulk_mixed_type", path="/bulk/files/", times=1)  # the run's one file: the id export's
    report = run_bulk_export(world.env, conn, "mixed")
    assert report.status == "failed" and report.new_members == 0
    assert "has a line that is not a Patient (line 3 of a Patient file: a Basic)" in (report.error or ""), report.error
    again = run_bulk_export(world.env, conn, "again")
    assert again.status == "completed" and (again.new_members, again.removed_members) == (0, 0), again.error


def test_no_membership_check_without_patient_scope_bdx15(sb4, world, http, request_log):
    """A grant without Patient read would have the id export refused on every run: the step is skipped."""
    scope = "system/Observation.rs system/Condition.rs"
    conn = connect_backend(world, sb4, http=http, group_id=GROUP, scope=scope)
    assert run_bulk_export(world.env, conn, "first", types=["Observation"]).status == "completed"
    sb4.admin.change_group_members(GROUP, add=["pat1"])
    report = run_bulk_export(world.env, conn, "second", types=["Observation"])
    assert report.status == "completed", report.error
    assert not report.membership_checked
    assert not [u for u in request_log.paths("/fhir/Group") if "_elements" in u.params]


def test_oracle_group_without_elements_or_patient_still_gets_new_members_older_data_bdx15(
    start_sandbox, world, http, request_log
):
    """BDX-15 on Oracle Health, whose Bulk does not support the experimental ``_elements`` and ``patient``
    parameters (the sandbox refuses them with 400, as a strict server would): members are read from an export of
    whole Patients and a new member's older data comes from the whole group exported again without ``_since``."""
    sb = start_sandbox(patients=4, bulk_unsupported_params=("_elements", "patient"))
    conn = connect_backend(world, sb, http=http, group_id=GROUP, provider_id="cerner")
    first = run_bulk_export(world.env, conn, "first")
    assert first.status == "completed", first.error
    assert sb.admin.change_group_members(GROUP, add=["pat1"], remove=["pat2"]) == ["pat0", "pat1"]
    observations = _sandbox_ids(sb, 1, "Observation")
    assert observations

    request_log.clear()
    second = run_bulk_export(world.env, conn, "second")
    assert second.status == "completed", second.error
    assert second.membership_checked and second.new_members == 1 and second.removed_members == 1
    assert _live(world, conn, "Patient") == {"pat0", "pat1", "pat2"}
    assert observations <= _live(world, conn, "Observation")
    kickoffs = request_log.paths(f"/fhir/Group/{GROUP}/$export")
    assert not request_log.paths(f"/fhir/Group/{GROUP}/$export", method="POST")
    assert all("_elements" not in u.params and "patient" not in u.params for u in kickoffs)
    assert ["_since" in u.params for u in kickoffs] == [True, False, False]  # main, member ids, whole group
    stored = cursors.get_data(world.env.db, conn, members_stream(GROUP), MEMBERS_KEY)
    assert stored == {"members": ["pat0", "pat1"], "removed": ["pat2"]}

    request_log.clear()
    third = run_bulk_export(world.env, conn, "third")
    assert third.status == "completed" and third.new_members == 0, third.error
    assert ["_since" in u.params for u in request_log.paths(f"/fhir/Group/{GROUP}/$export")] == [True, False]
