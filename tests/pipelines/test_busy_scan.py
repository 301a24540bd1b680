"""The scheduler's busy scan reads every queued or running run, however long the backlog (issue 10).

Before, the scan read only the newest 5,000 in-progress runs: a connection whose queued run was older than
that was taken for idle and got a second run. The page size is a parameter so the backlog here stays small.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from engine.run_tags import CONNECTION_TAG
from pipelines.defs._shared import run_control
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs._shared.run_control import busy_connections
from tests.pipelines.appdb import AppDb, queued_run
from tests.pipelines.scheduler import evaluate_scheduled_syncs

PAGE = 5


def _backlog(instance: DagsterInstance, oldest: str, newer: int) -> None:
    """``oldest``'s queued run first, then ``newer`` queued or running runs of other connections above it."""
    queued_run(instance, oldest)
    for n in range(newer):
        if n % 3 == 0:
            started = DagsterRunStatus.STARTED
            create_run_for_test(
                instance, job_name="incremental_sync", status=started, tags={CONNECTION_TAG: f"other-{n}"}
            )
        else:
            queued_run(instance, f"other-{n}")


def test_busy_scan_pages_through_a_backlog_longer_than_a_page(dagster_instance: DagsterInstance) -> None:
    _backlog(dagster_instance, "oldest", newer=3 * PAGE + 2)
    create_run_for_test(
        dagster_instance, job_name="incremental_sync", status=DagsterRunStatus.SUCCESS, tags={CONNECTION_TAG: "done"}
    )
    busy = busy_connections(dagster_instance, page_size=PAGE)
    assert "oldest" in busy
    assert busy == {"oldest", *(f"other-{n}" for n in range(3 * PAGE + 2))}  # finished runs do not count


@pytest.mark.parametrize("newer", [0, PAGE - 1, PAGE, 2 * PAGE])
def test_busy_scan_at_page_boundaries(dagster_instance: DagsterInstance, newer: int) -> None:
    _backlog(dagster_instance, "oldest", newer=newer)
    assert len(busy_connections(dagster_instance, page_size=PAGE)) == newer + 1


def test_busy_scan_refuses_an_empty_page(dagster_instance: DagsterInstance) -> None:
    with pytest.raises(ValueError, match="page_size"):
        busy_connections(dagster_instance, page_size=0)


def test_scheduler_never_doubles_a_connection_queued_below_the_first_page(
    app_db: AppDb, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due connection whose queued run lies below a page of newer queued runs is left alone (one run)."""
    monkeypatch.setattr(run_control, "BUSY_SCAN_PAGE_SIZE", PAGE)
    cid = app_db.add("c-old", last_sync=datetime.now(UTC) - timedelta(days=2))
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
    _backlog(dagster_instance, cid, newer=2 * PAGE + 1)
    result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert not result.run_requests, [r.partition_key for r in result.run_requests or []]
