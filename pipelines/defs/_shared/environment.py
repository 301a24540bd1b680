"""One step's engine environment (``engine.SyncEnvironment``) built from the run's resources."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from engine import SyncEnvironment
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)

__all__ = ["sync_environment"]


@contextmanager
def sync_environment(
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
) -> Iterator[SyncEnvironment]:
    """Build the engine's ``SyncEnvironment`` for one step (the database engine is disposed after it).

    ``policy`` is required: a step built without it searched with the default page size and overlap, not the
    configured ones."""
    http = ehr_http.client()
    overlap = timedelta(seconds=policy.overlap_seconds)
    with app_db.open() as db:
        yield SyncEnvironment(
            db=db,
            vault=app_db.vault(db, http),
            zone=landing.zone(),
            attachments=landing.attachments(),
            warehouse_target=warehouse.target,
            duckdb_memory_limit=warehouse.duckdb_memory_limit,
            duckdb_threads=warehouse.duckdb_threads,
            http=http,
            overlap=overlap,
            page_size=policy.page_size,
            retry=ehr_http.retry_policy(),
            rate_limits=ehr_http.rate_limits,
            bulk_membership_check=policy.bulk_membership_check,
            fetch_allowed_hosts=tuple(h.strip() for h in ehr_http.fetch_allowed_hosts.split(",") if h.strip()),
            bounds=ehr_http.bounds(),
            landing_retention_days=landing.retention_days,
            **landing.limits(),
        )
