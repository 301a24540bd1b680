"""Whole sync runs in tests: production's Dagster job, in-process, over a test world (``run_sync``).

``run_sync`` is ``ehrsync.run_now.run_sync_now`` (the same job, the same run-closing rule as production) with
the world's resources: its app database and vault (cipher key, test clients), landing zone, warehouse, and its
HTTP client (request log, timeouts), fast retries and no vendor call budget. ``types`` materializes only those
types' assets (and the referenced resources). ``sync_type`` is one type the way its two steps run it, for tests
of one type that need no run. ``run_reconcile`` is the weekly deletion reconciliation job over the world.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from ehrsync.run_now import SyncNowResult, run_sync_now
from engine import (
    REFERENCED_TYPES,
    TypeReport,
    hold_connection,
    land_resource_type,
    runs,
    upsert_resource_type,
)
from engine.reports import COUNT_FIELDS
from engine.runs import SyncRunRecord
from engine.settings import PipelineSettings
from pipelines.definitions import domain_definitions
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.maintenance.jobs import RECONCILE_JOB
from pipelines.defs.sync.reference_assets import NO_REFERENCES, REFERENCES_STEP
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
    default_resources,
)
from store import AppDatabase, TokenCipher, TokenVault
from tests.engine.helpers import FAST_RETRY, ClientRegistry, SyncWorld


class WorldAppDatabase(AppDatabaseResource):
    """The world's app database with its vault: its cipher key and its test clients (backend keys on disk)."""

    cipher_key_hex: str
    clients_dir: str

    def vault(self, db: AppDatabase, http: httpx.Client | None = None) -> TokenVault:
        clients = ClientRegistry(keys_dir=Path(self.clients_dir))
        return TokenVault(db, TokenCipher(bytes.fromhex(self.cipher_key_hex)), http=http, client_auth_resolver=clients)


# Resources hold configuration only (Dagster copies them), so a test's client is found again by its key.
_CLIENTS: dict[str, httpx.Client] = {}


class WorldHttp(EhrHttpResource):
    """The test's own HTTP client (request log, timeouts): the test closes it, not the run."""

    client_key: str = ""

    def client(self) -> httpx.Client:
        return _CLIENTS[self.client_key] if self.client_key else super().client()


def world_url(world: SyncWorld) -> str:
    return world.env.db.engine.url.render_as_string(hide_password=False)


def world_settings(world: SyncWorld) -> PipelineSettings:
    """The settings a process started on ``world``'s state folder reads (its app database and warehouse)."""
    return PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(Path(world.env.zone.root).parent),
            "DATABASE_URL": world_url(world),
            "WAREHOUSE_URL": world.env.warehouse_target,
        }
    )


def world_resources(world: SyncWorld) -> dict[str, Any]:
    """The resources a run binds, configured for ``world`` (same classes, same config fields as production)."""
    env = world.env
    key = ""
    if env.http is not None:
        key = str(id(env.http))
        _CLIENTS[key] = env.http
    retry = env.retry or FAST_RETRY
    http = WorldHttp(
        client_key=key,
        retry_min_s=retry.retry_after_min_s,
        retry_cap_s=retry.backoff_cap_s,
        rate_limits=env.rate_limits,
    )
    keys = world.clients.keys_dir
    return {
        "app_db": WorldAppDatabase(url=world_url(world), cipher_key_hex=world.cipher_key.hex(), clients_dir=str(keys)),
        "landing": LandingZoneResource(
            root=str(env.zone.root), attachments_root=str(env.attachments.root), step_budget_s=env.step_budget_s
        ),
        "warehouse": WarehouseResource(target=env.warehouse_target),
        "ehr_http": http,
        "policy": SyncPolicyResource(overlap_seconds=int(env.overlap.total_seconds()), page_size=env.page_size),
    }


def schedule_resources(world: SyncWorld) -> dict[str, Any]:
    """The resources the weekly reconcile schedule reads, for ``world``: its app database, and its landing zone,
    whose lock files say which connections a run holds."""
    return {"app_db": AppDatabaseResource(url=world_url(world)), "landing": world_resources(world)["landing"]}


@dataclass
class SyncRun:
    """One finished run: Dagster's result, the ``sync_runs`` row as the run closed it, and per-type reports."""

    result: SyncNowResult
    record: SyncRunRecord | None
    types: dict[str, TypeReport] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def status(self) -> str | None:
        return self.record.status if self.record is not None else None

    @property
    def error(self) -> str | None:
        return self.record.error if self.record is not None else None

    @property
    def failed_types(self) -> dict[str, str]:
        return {t: r.error for t, r in self.types.items() if r.error is not None}


def run_sync(
    world: SyncWorld,
    connection_id: str,
    *,
    full: bool = False,
    types: Sequence[str] | None = None,
    instance: DagsterInstance | None = None,
    console_log_level: str = "INFO",
) -> SyncRun:
    """Run the connection's sync job in-process (``run_sync_now``) and read back what it did."""
    settings = world_settings(world)
    with ExitStack() as stack:
        dagster = instance or stack.enter_context(DagsterInstance.ephemeral())
        result = run_sync_now(
            connection_id,
            full,
            settings=settings,
            instance=dagster,
            resource_types=types,
            resources=world_resources(world),
            console_log_level=console_log_level,
        )
    return SyncRun(result, runs.get(world.env.db, result.run_id), type_reports(result))


def run_reconcile(
    world: SyncWorld, connection_id: str, instance: DagsterInstance, *, tags: Mapping[str, str] | None = None
) -> ExecuteInProcessResult:
    """The reconcile job in-process over ``world`` (its resources: step budget, fast retries), with ``tags`` (who
    launched it: the weekly schedule's, ``ehrsync reconcile``'s)."""
    settings = world_settings(world)
    resources = {**default_resources(settings), **world_resources(world)}
    defs = Definitions.merge(*domain_definitions(settings), Definitions(resources=resources))
    job = defs.resolve_job_def(RECONCILE_JOB)
    instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [connection_id])
    return job.execute_in_process(
        partition_key=connection_id, instance=instance, raise_on_error=False, tags=dict(tags or {})
    )


def sync_type(world: SyncWorld, connection_id: str, resource_type: str, *, full: bool = False) -> TypeReport:
    """One type the way its two steps run it: ``land_resource_type`` then ``upsert_resource_type``, each under
    the connection's lock. A landing that raises, raises here; one that reports an error (and is not an
    incomplete search, which the upsert stores and then fails) is returned as the failing step would report it.
    """
    env, run_id = world.env, uuid.uuid4().hex
    with hold_connection(env, connection_id, run_id):
        landed = land_resource_type(env, connection_id, resource_type, run_id, full=full)
    if landed.error is not None and not landed.incomplete:
        return landed
    with hold_connection(env, connection_id, run_id):
        return upsert_resource_type(env, connection_id, resource_type, run_id)


def type_reports(result: SyncNowResult) -> dict[str, TypeReport]:
    """Per type: the landing and warehouse materializations' counts; a failed step's error names its type."""
    reports: dict[str, TypeReport] = {}
    for key in sorted(result.materializations, key=lambda k: not k.startswith("landing/")):
        rtype, metadata = key.partition("/")[2], result.materializations[key]
        if metadata.get("skipped_reason") == NO_REFERENCES:
            continue  # a referenced type nothing referenced: not read at all
        _fill(reports.setdefault(rtype, TypeReport(rtype)), metadata)
    for step_key, error in result.step_errors.items():
        if step_key == REFERENCES_STEP:
            for rtype in REFERENCED_TYPES:
                if f"{rtype}: " in error:
                    reports.setdefault(rtype, TypeReport(rtype)).error = error
            continue
        rtype = step_key.split("__", 1)[1]
        reports.setdefault(rtype, TypeReport(rtype)).error = error
    return reports


def _fill(report: TypeReport, metadata: dict[str, Any]) -> None:
    for name in COUNT_FIELDS:
        if name in metadata:
            setattr(report, name, int(metadata[name]))
    mark = metadata.get("high_water_mark")
    report.high_water_mark = datetime.fromisoformat(mark) if mark and mark != "none" else None
    report.skipped_reason = metadata.get("skipped_reason")
    report.incomplete = bool(metadata.get("incomplete", False))
    report.warnings = list(metadata.get("warnings", []))
