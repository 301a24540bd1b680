"""One step's engine environment (``engine.SyncEnvironment``) built from the run's resources."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from connectors.budgets import RESPONSE_BYTES_ENV
from connectors.transport import BodyBounds
from engine import SyncEnvironment
from engine.errors import PipelineConfigurationError
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)
from warehouse.limits import MAX_RESOURCE_ENV, max_resource_bytes

__all__ = ["check_run_limits", "sync_environment"]


def check_run_limits(landing: LandingZoneResource, ehr_http: EhrHttpResource) -> None:
    """The landing's resource limit must not exceed the response limit the run's requests keep to: a search page
    carrying one resource near it would fail whole (``response_too_large``) mid-run. The settings refuse such a pair
    of variables at start (``engine.settings.check_size_limits``); a run's config (the launchpad) can still set
    either field, so each step checks the pair it was given before any request, naming both fields and values."""
    resource, resource_name = landing.max_resource_bytes, "landing.max_resource_bytes"
    if resource is None:  # the landing zone reads the variable (``warehouse.limits.max_resource_bytes``)
        resource, resource_name = max_resource_bytes(), MAX_RESOURCE_ENV
    response = (ehr_http.bounds() or BodyBounds.from_env()).max_bytes  # unset: the variable, as the connectors read it
    response_name = RESPONSE_BYTES_ENV if ehr_http.max_response_bytes is None else "ehr_http.max_response_bytes"
    if response is not None and response < resource:
        raise PipelineConfigurationError(
            f"{resource_name}={resource} is above {response_name}={response}: a search page carrying a resource "
            f"near the resource limit would fail whole (response_too_large); lower {resource_name} or raise "
            f"{response_name} to at least {resource}"
        )


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
    configured ones. A resource limit above the response limit is refused first (``check_run_limits``)."""
    check_run_limits(landing, ehr_http)
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
