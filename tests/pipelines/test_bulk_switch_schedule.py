"""The ``scheduled_syncs`` sensor and the tenant's ``ehrIntegrations.enableBulkExport`` (engine.bulk_due).

Before, a due Bulk connection of a tenant that had turned Bulk export off got a run at every slot and every retry of
its backoff (up to every 6 h), each failing ``bulk_not_enabled`` with nothing sent: failed runs and alerts for a
tenant who chose it. Now the tick requests none, says why (the count and the setting, no tenant or patient), and asks
again at the first tick once the switch is on. A switch neither true nor false is a misconfiguration: its run is still
requested, to fail naming the setting. The tenants' settings are read in one query per tick, however many are due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm.attributes import flag_modified

from engine.bulk_switch import bulk_refusal
from engine.errors import TenantSettingInvalidError
from pipelines.defs._shared.partitions import BULK_CONNECTIONS_PARTITIONS_NAME, PATIENT_CONNECTIONS_PARTITIONS_NAME
from store.models import Connection, Tenant
from tests.fixtures.tenant_settings import bulk_allowed
from tests.pipelines.appdb import AppDb, make_app_db
from tests.pipelines.scheduler import evaluate_scheduled_syncs

_SETTING = "practice_settings.ehrIntegrations.enableBulkExport"
_LEFT_OUT = object()


def set_bulk_switch(app_db: AppDb, value: object, tenant_id: str | None = None) -> None:
    """The tenant's stored ``ehrIntegrations.enableBulkExport`` (``_LEFT_OUT``: the section without it)."""
    with app_db.db.session() as session:
        tenant = session.get(Tenant, tenant_id or app_db.tenant_id)
        assert tenant is not None
        section = {} if value is _LEFT_OUT else {"enableBulkExport": value}
        tenant.settings = {"practice_settings": {"ehrIntegrations": section}}
        flag_modified(tenant, "settings")
        session.commit()


def _due(app_db: AppDb, instance: DagsterInstance, cid: str, kind: str = "backend") -> str:
    app_db.add(cid, kind=kind, last_sync=datetime.now(UTC) - timedelta(days=3))
    instance.add_dynamic_partitions(
        BULK_CONNECTIONS_PARTITIONS_NAME if kind != "patient" else PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid]
    )
    return cid


def _requested(result: Any) -> dict[str, str]:
    return {r.partition_key: r.job_name for r in result.run_requests or []}


@pytest.mark.parametrize("value", [False, _LEFT_OUT], ids=["false", "left-out"])
def test_a_due_bulk_connection_of_a_tenant_with_bulk_off_gets_no_run_and_the_tick_says_why(
    app_db: AppDb, dagster_instance: DagsterInstance, value: object
) -> None:
    _due(app_db, dagster_instance, "bulk-a")
    _due(app_db, dagster_instance, "bulk-b", kind="group")
    set_bulk_switch(app_db, value)

    skipped = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert not skipped.run_requests
    assert skipped.skip_reason is not None
    why = skipped.skip_reason.skip_message or ""
    assert (
        "'bulk_not_enabled': 2" in why and f"2 due Bulk connection(s) not requested: their tenant's {_SETTING}" in why
    )
    assert app_db.tenant_id not in why, "counts and the setting, no tenant named"

    set_bulk_switch(app_db, True)  # turned on again: the very next tick asks for both
    again = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert _requested(again) == {"bulk-a": "bulk_export", "bulk-b": "bulk_export"}


def test_the_skip_reason_names_each_tally_by_its_code(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    """docs/PIPELINES.md: a tick that requests nothing says why, by the tally's codes (``not_yet``,
    ``bulk_not_enabled``, ...). Before, the scheduler's own reasons showed as Python reprs beside the Bulk switch's
    plain code: ``{'bulk_not_enabled': 1, <DueReason.NOT_YET: 'not_yet'>: 1}`` in the UI and the tick's log."""
    _due(app_db, dagster_instance, "bulk-off")
    app_db.add("bulk-recent", kind="backend", last_sync=datetime.now(UTC) - timedelta(minutes=5))
    dagster_instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, ["bulk-recent"])
    set_bulk_switch(app_db, False)
    skipped = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert not skipped.run_requests and skipped.skip_reason is not None
    why = skipped.skip_reason.skip_message or ""
    assert "not requested: {'bulk_not_enabled': 1, 'not_yet': 1}" in why and "DueReason" not in why, why


def test_other_connections_are_requested_in_the_same_tick(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    _due(app_db, dagster_instance, "bulk-off")
    _due(app_db, dagster_instance, "patient", kind="patient")
    set_bulk_switch(app_db, False)
    assert _requested(evaluate_scheduled_syncs(dagster_instance, app_db)) == {"patient": "incremental_sync"}


@pytest.mark.parametrize("value", ["yes", None, 1], ids=["string", "null", "number"])
def test_a_switch_neither_true_nor_false_still_gets_its_run_and_a_warning(
    app_db: AppDb, dagster_instance: DagsterInstance, value: object, capfd: pytest.CaptureFixture[str]
) -> None:
    _due(app_db, dagster_instance, "bulk-odd")
    set_bulk_switch(app_db, value)
    result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert _requested(result) == {"bulk-odd": "bulk_export"}, "a misconfiguration stays visible: its run fails by name"
    warned = [line for line in capfd.readouterr().err.splitlines() if "neither true nor false" in line]
    assert warned and "WARNING" in warned[0] and "1 Bulk connection(s)" in warned[0] and _SETTING in warned[0], warned


@contextmanager
def _tenant_setting_reads() -> Iterator[list[str]]:
    """Every SQL statement that reads a tenant's ``settings`` column, on any engine (the sensor opens its own)."""
    seen: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "tenants.settings" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", spy)


def test_the_tick_reads_every_due_bulk_connections_tenant_in_one_query(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    other = "other-practice"
    with app_db.db.session() as session:
        session.add(Tenant(id=other, name="Other practice", settings=bulk_allowed()))
        session.commit()
    for n in range(30):
        _due(app_db, dagster_instance, f"bulk-{n:02d}")
    set_bulk_switch(app_db, False)
    with app_db.db.session() as session:  # a third of them move to a tenant that allows Bulk export
        for n in range(0, 30, 3):
            row = session.get(Connection, f"bulk-{n:02d}")
            assert row is not None
            row.tenant_id = other
        session.commit()
    with _tenant_setting_reads() as reads:
        result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert set(_requested(result)) == {f"bulk-{n:02d}" for n in range(0, 30, 3)}
    assert len(reads) == 1, reads


def _unreadable_tenant(app_db: AppDb, tenant_id: str) -> None:
    """A tenant row whose ``settings`` are not JSON (a hand edit of an SQLite app database)."""
    with app_db.db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, settings, created_at, updated_at)"
                " VALUES (:t, 'Edited', '{enableBulkExport: true', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"t": tenant_id},
        )


def test_a_tenant_row_that_is_not_json_stops_no_other_connection_and_its_run_fails_by_name(
    app_db: AppDb, dagster_instance: DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    """Before, the tick's one query of the tenants' settings raised ``JSONDecodeError`` for the whole tick: no run for
    any tenant, every minute, until the row was fixed. Now that tenant's connection is requested as a switch neither
    true nor false is (warned), every other one as usual, and its run fails ``tenant_setting_invalid`` naming it."""
    _unreadable_tenant(app_db, "edited")
    _due(app_db, dagster_instance, "patient", kind="patient")
    _due(app_db, dagster_instance, "bulk-ok")
    set_bulk_switch(app_db, True)
    _due(app_db, dagster_instance, "bulk-edited")
    with app_db.db.session() as session:
        row = session.get(Connection, "bulk-edited")
        assert row is not None
        row.tenant_id = "edited"
        session.commit()

    result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert set(_requested(result)) == {"patient", "bulk-ok", "bulk-edited"}
    assert any("1 Bulk connection(s)" in line for line in capfd.readouterr().err.splitlines())
    refusal = bulk_refusal(app_db.db, "bulk-edited", "edited")
    assert isinstance(refusal, TenantSettingInvalidError), refusal
    assert (
        "not JSON" in refusal.message
        and _SETTING in refusal.message
        and "enableBulkExport: true" not in refusal.message
    )


@pytest.mark.postgres
def test_the_switch_is_read_alike_on_a_postgres_app_database(
    postgres_url: str, dagster_instance: DagsterInstance
) -> None:
    """The settings are read as text and parsed row by row: PostgreSQL's ``json`` column reads so too."""
    appdb = make_app_db(postgres_url)
    try:
        _due(appdb, dagster_instance, "bulk-on")
        assert _requested(evaluate_scheduled_syncs(dagster_instance, appdb)) == {"bulk-on": "bulk_export"}
        set_bulk_switch(appdb, False)
        assert not evaluate_scheduled_syncs(dagster_instance, appdb).run_requests
        set_bulk_switch(appdb, "yes")
        refusal = bulk_refusal(appdb.db, "bulk-on", appdb.tenant_id)
        assert isinstance(refusal, TenantSettingInvalidError) and "got a string" in refusal.message, refusal
    finally:
        appdb.db.dispose()


@contextmanager
def _settings_read_fails() -> Iterator[list[str]]:
    """The database refuses every read of a tenant's ``settings`` ("database is locked", as SQLite answers a read
    while ``ehrsync auth seed`` commits), on any engine: a fault of the real database driver, not of our code."""
    seen: list[str] = []

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "tenants.settings" in statement:
            seen.append(statement)
            raise sqlite3.OperationalError("database is locked")

    event.listen(Engine, "before_cursor_execute", fail)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", fail)


def test_a_database_error_reading_the_switches_neither_fails_the_tick_nor_skips_a_connection(
    app_db: AppDb, dagster_instance: DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    """Before, the error left the sensor: a failed tick with a traceback, no run for any connection. The switch
    read is the scheduler's courtesy, the run's own check is the rule: the tick requests every due run as before
    this check existed, and warns naming the database error (each Bulk run reads its switch and fails by name)."""
    _due(app_db, dagster_instance, "patient", kind="patient")
    _due(app_db, dagster_instance, "bulk-a")
    with _settings_read_fails() as reads:
        result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert reads, "the fault was armed on the switch read"
    assert _requested(result) == {"patient": "incremental_sync", "bulk-a": "bulk_export"}
    warned = [line for line in capfd.readouterr().err.splitlines() if "could not be read" in line]
    assert warned and "WARNING" in warned[0] and "database is locked" in warned[0] and _SETTING in warned[0], warned


def test_connections_the_switch_refuses_cost_no_lookup_of_their_runs(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """Refused, they stay due at every tick (no failed run starts a backoff): before, each tick looked up the runs in
    flight of each (one Dagster query apiece up to 25, a scan of every run in progress past that), every minute for
    as long as the switch is off. Now they are left out first; only the connections still due are looked up."""
    instance = dagster_instance_on_disk
    for n in range(10):
        _due(app_db, instance, f"bulk-{n}")
    set_bulk_switch(app_db, False)
    seen: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "run_tags" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    try:
        result = evaluate_scheduled_syncs(instance, app_db)
    finally:
        event.remove(Engine, "before_cursor_execute", spy)
    assert not result.run_requests
    assert seen == [], f"{len(seen)} lookups of runs for connections that get none"
