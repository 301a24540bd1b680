"""Dagster's automatic retry of a connection's own run whose source holds it (BDX-10, ``source_hold``): no row
when none of its steps opened one, and when one did (a ``warehouse/<Type>`` step upserting what its parent landed,
which sends nothing to the EHR, beside the held landing steps) the hold is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from engine import runs
from engine.retries import failure_streaks, source_holds
from engine.run_outcome import finish_sync_run
from engine.run_tags import CONNECTION_TAG
from pipelines.defs._shared.run_control import RESUME_RETRY_TAG, RETRY_NUMBER_TAG
from pipelines.defs._shared.source_hold import run_held_until
from tests.pipelines.appdb import AppDb
from tests.pipelines.test_run_status_sensors import report_failure


def _held_parent_and_retry(
    app_db: AppDb, instance: DagsterInstance, cid: str, *, automatic: bool = True, opened: bool = True
) -> tuple[DagsterRun, datetime]:
    """A failed run whose step noted its source's time, and a re-execution from failure of it (Dagster's automatic
    retry, or an operator's); ``opened``: its warehouse step opened its row (``runs.continue_run``, as
    ``upsert_resource_type`` does), else none of its steps did (its landing steps held)."""
    parent = create_run_for_test(
        instance, job_name="incremental_sync", status=DagsterRunStatus.FAILURE, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, parent.run_id, "incremental", tenant_id=app_db.tenant_id)
    until = datetime.now(UTC) + timedelta(hours=1)
    runs.hold_until(app_db.db, parent.run_id, until)
    finish_sync_run(app_db.db, parent.run_id, cid, succeeded=False, error="x")
    retry = create_run_for_test(
        instance,
        job_name="incremental_sync",
        status=DagsterRunStatus.FAILURE,
        tags={CONNECTION_TAG: cid, RESUME_RETRY_TAG: "true", **({RETRY_NUMBER_TAG: "1"} if automatic else {})},
        parent_run_id=parent.run_id,
        root_run_id=parent.run_id,
    )
    if opened:
        runs.continue_run(app_db.db, cid, retry.run_id, [parent.run_id])
    return retry, until


@pytest.mark.parametrize("automatic", [True, False], ids=["automatic_retry", "operator"])
def test_an_automatic_retry_of_a_connection_s_own_held_run_records_no_failure(
    app_db: AppDb, dagster_instance: DagsterInstance, automatic: bool
) -> None:
    """BDX-10: a connection's own run noted its source's time (``not_before``) and failed; Dagster's automatic
    retry of it sends nothing before that time (its steps fail as held, ``source_hold``) and is not recorded
    failed: a failed row would be the connection's newest, ending the hold (the scheduler retrying it after the
    backoff, into the throttle) and lengthening its failure streak. An operator's re-execution is recorded."""
    cid = app_db.add("c1")
    retry, _ = _held_parent_and_retry(app_db, dagster_instance, cid, automatic=automatic, opened=False)
    report_failure(app_db, dagster_instance, retry)
    assert (runs.get(app_db.db, retry.run_id) is None) is automatic
    assert (cid in source_holds(app_db.db)) is automatic
    assert failure_streaks(app_db.db)[cid].failures == (1 if automatic else 2)


def test_bdx10_a_held_retry_whose_warehouse_step_opened_its_row_still_holds_its_landing_steps(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """The retry's own row (no time of its own: it met no throttle) is not the end of its lineage's hold. Before,
    it was read as the newest row, so the landing steps after such a warehouse step sent their searches into the
    throttle."""
    cid = app_db.add("c1")
    retry, until = _held_parent_and_retry(app_db, dagster_instance, cid)
    assert run_held_until(dagster_instance, retry, app_db.db, datetime.now(UTC)) == until


def test_bdx10_a_held_retry_whose_warehouse_step_opened_its_row_is_closed_deferred_keeping_the_hold(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """The failure sensor closes such a retry's row ``deferred`` with its lineage's ``not_before``: its landing sent
    nothing. Before, it closed the row ``failed`` with no time: the connection's newest row, it ended the hold (the
    scheduler retried it after the 5 min backoff, into the throttle) and lengthened the failure streak."""
    cid = app_db.add("c1")
    retry, until = _held_parent_and_retry(app_db, dagster_instance, cid)
    report_failure(app_db, dagster_instance, retry)
    record = runs.get(app_db.db, retry.run_id)
    assert record is not None and record.status == "deferred" and record.not_before == until
    assert record.error is not None and "held until" in record.error
    assert source_holds(app_db.db)[cid].until == until
    assert failure_streaks(app_db.db)[cid].failures == 1
