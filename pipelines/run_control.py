"""Reading and stopping a connection's runs on the Dagster instance (used by the sensors)."""

from __future__ import annotations

import logging

from dagster import DagsterError, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_shared.check import CheckError

from pipelines.tags import CONNECTION_TAG

__all__ = ["PENDING_STATUSES", "RUNNING_STATUSES", "busy_connections", "stop_connection_runs"]

logger = logging.getLogger(__name__)

PENDING_STATUSES = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)
RUNNING_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
_BUSY_SCAN_LIMIT = 5000


def busy_connections(instance: DagsterInstance) -> set[str]:
    """Connection ids with a run queued or in progress (any job), from the runs' ``ehrsync/connection`` tag."""
    runs = instance.get_runs(
        filters=RunsFilter(statuses=[*PENDING_STATUSES, *RUNNING_STATUSES]), limit=_BUSY_SCAN_LIMIT
    )
    return {run.tags[CONNECTION_TAG] for run in runs if CONNECTION_TAG in run.tags}


def stop_connection_runs(instance: DagsterInstance, connection_id: str) -> int:
    """Cancel queued runs and ask running ones to terminate; returns how many runs were stopped or signalled.

    A queued run is cancelled in storage directly (whatever the coordinator); a started one goes through the
    run coordinator, which asks the launcher to terminate it. A launcher that cannot terminate is logged.
    """
    runs = instance.get_runs(
        filters=RunsFilter(tags={CONNECTION_TAG: connection_id}, statuses=[*PENDING_STATUSES, *RUNNING_STATUSES])
    )
    stopped = 0
    for run in runs:
        if run.status in PENDING_STATUSES:
            instance.report_run_canceling(run, message="ehrsync: connection disconnected or disabled")
            instance.report_run_canceled(run, message="ehrsync: connection disconnected or disabled")
            stopped += 1
            continue
        try:
            terminated = instance.run_coordinator.cancel_run(run.run_id)
        # An unreachable code server, or a launcher that cannot terminate at all (the in-memory one raises
        # CheckError), must not stop the sensor's other work.
        except (DagsterError, CheckError, NotImplementedError) as exc:
            logger.warning("terminating run %s of connection %s failed: %s", run.run_id, connection_id, exc)
            continue
        if terminated:
            stopped += 1
        else:
            logger.warning("run %s of connection %s did not confirm termination", run.run_id, connection_id)
    return stopped
