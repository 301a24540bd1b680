"""A Bulk export starts only for a tenant whose ``ehrIntegrations.enableBulkExport`` is ``true`` (engine.bulk_switch).

Before, only the auth service's sync API asked (409 ``bulk_not_enabled``); the engine, which every other way runs
(the schedule, ``ehrsync sync``, the Dagster UI), kicked off a group/system export of every patient of a tenant that
had turned it off. Now the run fails naming the switch and its fix before any request to the EHR (no token, no
kick-off), notes no hold, and keeps an export already kicked off as it was, resumed once the switch is on again.
A switch stored neither true nor false is neither: ``tenant_setting_invalid`` naming it, nothing sent.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from engine import cursors, run_bulk_export
from engine.models import BulkJob, SyncRun
from store.models import Tenant
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

_LEFT_OUT = object()


def _set_switch(world: SyncWorld, value: object) -> None:
    """The tenant's stored ``ehrIntegrations.enableBulkExport`` (``_LEFT_OUT``: the section without it)."""
    section = {} if value is _LEFT_OUT else {"enableBulkExport": value}
    with world.env.db.session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.settings = {"practice_settings": {"ehrIntegrations": section}}
        flag_modified(tenant, "settings")  # 1 == True to the ORM: without it, ``1`` after ``true`` is never written
        session.commit()


def _row(world: SyncWorld, run_id: str) -> SyncRun:
    with world.env.db.session() as session:
        row = session.get(SyncRun, run_id)
        assert row is not None
        return row


def _jobs(world: SyncWorld, connection_id: str) -> list[tuple[str, str, str | None]]:
    with world.env.db.session() as session:
        rows = session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all()
        return [(j.id, j.status, j.status_url) for j in rows]


def _refused(world: SyncWorld, conn: str, run_id: str, request_log: RequestLog, code: str) -> str:
    """Run the export; it must fail ``code`` with nothing sent, no hold noted; returns the run's error."""
    request_log.clear()
    report = run_bulk_export(world.env, conn, run_id)
    assert report.status == "failed" and report.error is not None and report.error.startswith(f"{code}: "), report
    assert request_log.urls == [], "nothing may reach the EHR: no token, no CapabilityStatement, no kick-off"
    row = _row(world, run_id)
    assert (row.status, row.error, row.not_before) == ("failed", report.error, None)
    assert "practice_settings.ehrIntegrations.enableBulkExport" in report.error
    assert "ehrsync auth seed FILE" in report.error
    return report.error


@pytest.mark.parametrize("value", [False, _LEFT_OUT], ids=["false", "left-out"])
@pytest.mark.parametrize("group_id", ["grp0", None], ids=["group", "system"])
def test_a_tenant_with_bulk_export_off_gets_no_export_and_a_run_naming_the_switch(
    world: SyncWorld, shared_sb: Any, http: httpx.Client, request_log: RequestLog, value: object, group_id: str | None
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=group_id)
    _set_switch(world, value)
    error = _refused(world, conn, "off", request_log, "bulk_not_enabled")
    assert "is not true" in error and "nothing was sent to the EHR" in error, error
    assert _jobs(world, conn) == []


@pytest.mark.parametrize(("value", "kind"), [("yes", "a string"), (None, "null"), (1, "a number")])
def test_a_switch_stored_neither_true_nor_false_is_neither_and_named(
    world: SyncWorld, shared_sb: Any, http: httpx.Client, request_log: RequestLog, value: object, kind: str
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    _set_switch(world, value)
    error = _refused(world, conn, "odd", request_log, "tenant_setting_invalid")
    assert f"must be true or false, got {kind}" in error, error


def test_a_connection_whose_tenant_has_no_row_is_refused_as_the_sync_api_refuses_it(
    world: SyncWorld, shared_sb: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    database = world.env.db.engine.url.database
    assert database is not None
    with closing(sqlite3.connect(database)) as raw:  # SQLite with foreign keys off: an orphan a hand edit can leave
        raw.execute("DELETE FROM tenants WHERE id = ?", (world.tenant_id,))
        raw.commit()
    error = _refused(world, conn, "orphan", request_log, "bulk_not_enabled")
    assert "has no row in the app database" in error, error


def test_an_export_kicked_off_before_the_switch_went_off_waits_and_resumes_once_it_is_on(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    add_fault(http, sb, "500", path="/bulk/files", times=1000)  # kicked off, every file download fails
    first = run_bulk_export(world.env, conn, "first")
    assert first.status == "failed", first
    jobs = _jobs(world, conn)
    assert len(jobs) == 1 and jobs[0][1] != "completed", jobs
    sb.admin.clear_faults()

    _set_switch(world, False)
    _refused(world, conn, "while-off", request_log, "bulk_not_enabled")
    assert _jobs(world, conn) == jobs, "the kicked-off job is kept as it was: resumable"
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "grp0"), cursors.bulk_type_key([])) is None

    _set_switch(world, True)
    resumed = run_bulk_export(world.env, conn, "on-again")
    assert (resumed.status, resumed.resumed, resumed.job_id) == ("completed", True, jobs[0][0]), resumed.error
    assert len(_jobs(world, conn)) == 1, "the saved export is finished, no second kick-off"
