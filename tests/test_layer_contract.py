"""The auth service submits Dagster runs by name (GraphQL) without importing the pipelines layer; these are the
names it copies. A rename on either side fails here instead of in production."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auth_service.services import sync_api
from ehrsync.run_now import job_for
from engine import connection_snapshots as connections
from pipelines.defs._shared.partitions import BULK_CONNECTIONS_PARTITIONS_NAME, PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB


def test_partition_and_kind_names_match_the_pipelines() -> None:
    """(Run tags are not copied: the service builds them with ``engine.run_tags``, as the sensors do.)"""
    assert sync_api.PATIENT_CONNECTIONS_PARTITIONS == PATIENT_CONNECTIONS_PARTITIONS_NAME
    assert sync_api.BULK_CONNECTIONS_PARTITIONS == BULK_CONNECTIONS_PARTITIONS_NAME
    assert sync_api.BULK_KINDS == connections.BULK_KINDS


@pytest.mark.parametrize("kind", ["patient", "backend", "group"])
@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_job_choice_matches_the_pipelines(kind: str, mode: str) -> None:
    job, _ = sync_api.job_for(SimpleNamespace(kind=kind), mode)  # type: ignore[arg-type]
    assert job == job_for(is_bulk=kind in sync_api.BULK_KINDS, full=mode == "full")
    assert job in {BULK_EXPORT_JOB, FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB}
