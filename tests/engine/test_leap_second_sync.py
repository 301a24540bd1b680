"""A server stamping in a leap second (sandbox ``clock_leap_second``: every server-clock stamp is ``hh:mm:60.fffZ``
of the minute before now, which FHIR R4 allows) syncs like any other: its resources land (none quarantined) with
``last_updated`` ``hh:mm:59.999999``, and the mark taken from its times (searchset ``meta.lastUpdated``, Bulk
``transactionTime``) is clamped down, never past the moment it names: a resource stamped in the same leap second
after the sync is found by the next one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine import cursors, run_bulk_export
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, make_environment, mutate
from tests.engine.job_runs import run_sync


def _last_updated(world: SyncWorld, rid: str) -> datetime:
    with world.env.warehouse() as wh, wh._read() as cur:
        cur.execute("SELECT last_updated FROM fhir_resources WHERE id = %s", (rid,))
        row = cur.fetchone()
    assert row is not None, rid
    return row[0]


def _is_clamped_leap_second(moment: datetime | None) -> bool:
    """``hh:mm:59.999999`` UTC, at or before now: what a server's ``hh:mm:60`` becomes."""
    return moment is not None and (moment.second, moment.microsecond) == (59, 999999) and moment <= datetime.now(UTC)


def test_bdx23_bdx27_rest_sync_of_a_leap_second_server_lands_all_and_the_mark_stays_before_it(
    start_sandbox, tmp_path, http, request_log
):
    """BDX-27: the mark is the server's ``meta.lastUpdated`` (a leap second, clamped down), not the later ``Date``
    header; with no overlap the next search still finds a resource stamped in that same leap second."""
    sb = start_sandbox(patients=1, clock_leap_second=True)
    world = make_environment(tmp_path / "rest", http=http, overlap=timedelta(0))
    conn = connect_patient(world, sb, http=http)
    (first_ref,) = mutate(http, sb, create=1)["created"]
    first = run_sync(world, conn, types=["Observation"])
    assert first.status == "completed", (first.error, first.failed_types)
    obs = first.types["Observation"]
    assert obs.quarantined == 0 and obs.created == obs.fetched > 1
    assert _is_clamped_leap_second(_last_updated(world, first_ref.split("/")[1]))
    mark = cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation")
    assert mark == obs.high_water_mark and _is_clamped_leap_second(mark)

    (second_ref,) = mutate(http, sb, create=1)["created"]  # stamped in this minute's leap second, or a later one
    request_log.clear()
    second = run_sync(world, conn, types=["Observation"])
    assert second.status == "completed", (second.error, second.failed_types)
    searches = [u for u in request_log.paths("/fhir/Observation") if "_lastUpdated" in u.params]
    assert searches and searches[0].params["_lastUpdated"] == "gt" + mark.strftime("%Y-%m-%dT%H:%M:59.999Z")
    assert second.types["Observation"].created == 1 and second.types["Observation"].quarantined == 0
    assert _is_clamped_leap_second(_last_updated(world, second_ref.split("/")[1]))


def test_bdx12_bdx14_bulk_export_of_a_leap_second_server_lands_all_and_since_stays_before_it(
    start_sandbox, world, http, request_log
):
    """BDX-12/14: a manifest whose ``transactionTime`` is a leap second is accepted; the next ``_since`` is that
    second clamped down, so a resource stamped in the same leap second after the export comes with the next one."""
    sb = start_sandbox(patients=1, clock_leap_second=True)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    (first_ref,) = mutate(http, sb, create=1)["created"]
    first = run_bulk_export(world.env, conn, "leap-1")
    assert first.status == "completed", first.error
    assert sum(r.quarantined for r in first.types.values()) == 0 and first.types["Observation"].created > 1
    assert _is_clamped_leap_second(_last_updated(world, first_ref.split("/")[1]))
    since = cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "grp0"), "*")
    assert since == first.transaction_time and _is_clamped_leap_second(since)

    (second_ref,) = mutate(http, sb, create=1)["created"]
    request_log.clear()
    second = run_bulk_export(world.env, conn, "leap-2")
    assert second.status == "completed", second.error
    kickoff = request_log.paths("/fhir/Group/grp0/$export")
    assert kickoff and kickoff[0].params["_since"] == since.strftime("%Y-%m-%dT%H:%M:59.999999Z")
    assert second.types["Observation"].created == 1
    assert _is_clamped_leap_second(_last_updated(world, second_ref.split("/")[1]))
