"""``make demo``: the whole product on one machine, with no EHR account.

Sandbox EHR → patients authorize through the auth service (SMART standalone launch, PKCE, tokens sealed in the
vault) → Dagster syncs each connection (REST, `_lastUpdated`) → Parquet landing → DuckDB upsert → changes on the
EHR → incremental sync fetching only those → a second incremental sync fetching nothing → a Bulk `$export` of a
group through SMART Backend Services → the analyst views and their snapshot → a summary with an example query.
Every step goes through the same code production uses.

The settings are read once (``settings.load_app_settings``) and handed to every run: the demo's app database and
warehouse live under ``--state``; an environment naming others (``DATABASE_URL``, ``WAREHOUSE_URL``) is refused.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ehrsync.demo_analyst import analyst_summary, refresh_analyst_views
from ehrsync.demo_report import BulkProgress, SyncTotals, fingerprint, say, summary
from ehrsync.demo_setup import (
    BACKEND_CLIENT,
    DEMO_TENANT,
    ENV_FILE,
    PATIENT_CLIENT,
    DemoError,
    auth_service,
    authorize_patient,
    check_state_dir,
    demo_environment,
    mark_demo_state,
    practice_settings,
    refuse_external_stores,
)

if TYPE_CHECKING:
    from engine.settings import PipelineSettings

__all__ = ["DEMO_GROUP", "DemoError", "demo_environment", "run_demo"]

DEMO_GROUP = "grp2"


@dataclass(frozen=True)
class _Demo:
    """What every step needs: the settings (read once), the sandbox, the auth service and its context."""

    settings: PipelineSettings
    sandbox: Any
    app_url: str
    ctx: Any


def _step(number: int, title: str) -> None:
    say(f"\n== {number}. {title}")


def _demo_settings(state_dir: Path, env: Mapping[str, str]) -> PipelineSettings:
    """The demo's settings: the process environment plus its env file, with the DAGSTER_HOME of its state.

    Production keeps the 5-minute safety overlap (BDX-28): it re-reads recent changes, which the idempotent
    upsert absorbs. The demo runs its syncs seconds apart, so it turns the overlap off to show exact counts.
    """
    from engine.settings import PipelineSettings
    from settings import load_app_settings

    values = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    values.update(env)
    values["EHRSYNC_SYNC_OVERLAP_SECONDS"] = "0"
    return PipelineSettings.from_app(load_app_settings(values))


def run_demo(
    state_dir: Path,
    *,
    patients: int = 25,
    connect: int = 3,
    keep: bool = False,
    sandbox_port: int = 0,
    auth_port: int = 0,
) -> int:
    """Run every step; returns the process exit code (0 when every check held). Ports 0 pick free ones."""
    from sandbox import SandboxConfig, SandboxServer
    from settings import load_app_settings

    state_dir = state_dir.resolve()
    check_state_dir(state_dir, deleting=not keep)
    refuse_external_stores(load_app_settings())
    if state_dir.exists() and not keep:
        shutil.rmtree(state_dir)
    if not state_dir.exists() or not any(state_dir.iterdir()):  # only a folder it creates is the demo's to delete
        mark_demo_state(state_dir)
    env = demo_environment(state_dir)
    settings = _demo_settings(state_dir, env)
    os.environ["INTEGRATIONS_TOKEN_ENC_KEY"] = env["INTEGRATIONS_TOKEN_ENC_KEY"]  # the vault opens with it

    _step(1, f"Sandbox EHR with {patients} synthetic patients")
    with SandboxServer(SandboxConfig(patients=patients, seed=7, port=sandbox_port)) as sb:
        say(f"   FHIR base {sb.fhir_base}")
        with auth_service(state_dir, env, sb.fhir_base, port=auth_port) as (app_url, ctx):
            say(f"   auth service {app_url}")
            demo = _Demo(settings, sb, app_url, ctx)
            connections, api_key = _authorize(demo, connect)
            full, incremental = _sync_and_change(demo, connections)
            _idle_sync(demo, connections)
            _bulk_step(demo, api_key)
            _step(9, "Analyst views: the analyst_views job refreshes them and publishes a read-only snapshot")
            analyst = refresh_analyst_views(settings)
            _step(10, "Summary: the warehouse (DuckDB) as an analyst sees it")
            summary(settings.warehouse_url, full, incremental)
            analyst_summary(settings.warehouse_url, analyst)
    say(f"\nState kept in {state_dir} ({ENV_FILE} holds the demo's settings and vault key).")
    ui = _ui_command(state_dir)
    say(f"Open the Dagster UI over it with {ui} (assets, one partition per connection, runs with metadata).")
    return 0


def _ui_command(state_dir: Path) -> str:
    """The command that opens the UI over this folder: `make ui` opens only the checkout's var/demo."""
    from settings import DEFAULT_STATE_DIR

    if state_dir == Path(DEFAULT_STATE_DIR).resolve():
        return "`make ui`"
    return f"`ehrsync ui --state {state_dir}`"


def _authorize(demo: _Demo, connect: int) -> tuple[dict[str, str], str]:
    """Step 2: register the demo's clients and tenant, then ``connect`` patients authorize; returns their
    connections (connection id -> patient id) and the tenant's admin API key."""
    from auth_service.services.tenants import bootstrap_tenant
    from auth_service.tenants.settings import TenantSeed

    _step(2, f"{connect} patients authorize ehrsync (SMART standalone launch, PKCE S256, tokens sealed AES-256-GCM)")
    sb, app_url = demo.sandbox, demo.app_url
    sb.admin.register_client(PATIENT_CLIENT, "public", redirect_uris=[f"{app_url}/api/integrations/smart/callback"])
    sb.admin.register_client(
        BACKEND_CLIENT, "backend", jwks_url=f"{app_url}/api/integrations/ehr/jwks", allowed_scopes="system/*.rs"
    )
    seed = TenantSeed.model_validate(
        {"id": DEMO_TENANT, "name": "Demo Clinic", "practice_settings": practice_settings(sb.fhir_base)}
    )
    with demo.ctx.db.session() as session, session.begin():
        api_key = bootstrap_tenant(session, seed, demo.ctx.cipher).api_key
    patient_ids = sb.admin.patients()[:connect]
    for pid in patient_ids:
        authorize_patient(app_url, sb.admin, pid)
    connections = _patient_connections(demo.ctx)
    for conn_id, pid in connections.items():
        say(f"   Patient/{pid} -> connection {conn_id}")
    if sorted(connections.values()) != sorted(patient_ids):
        raise DemoError(f"expected connections for {patient_ids}, found {sorted(connections.values())}")
    return connections, api_key


def _sync_and_change(demo: _Demo, connections: Mapping[str, str]) -> tuple[SyncTotals, SyncTotals]:
    """Steps 3 to 6: full sync, changes on the EHR, an incremental sync fetching exactly those, reconciliation."""
    _step(3, "Full sync of every resource type, per connection (Dagster partition = connection)")
    full = SyncTotals()
    for conn_id in connections:
        seconds = _sync(demo, conn_id, full=True, totals=full)
        say(f"   {conn_id}: done in {seconds:.1f} s")
    say(f"   fetched {sum(full.fetched.values())} resources into Parquet, {sum(full.created.values())} rows created")

    _step(4, "Records change on the EHR (updates, deletes, new observations) for the connected patients")
    changed = demo.sandbox.admin.mutate(create=3, update=6, delete=2, seed=2026, patients=list(connections.values()))
    for kind in ("created", "updated", "deleted"):
        say(f"   {kind:<8} {', '.join(changed[kind])}")

    _step(5, "Incremental sync (_lastUpdated > each connection's high-water mark; overlap 0 s for the demo)")
    incremental = SyncTotals()
    for conn_id in connections:
        _sync(demo, conn_id, full=False, totals=incremental)
    _check_incremental(incremental, changed)

    _step(6, "Deletes: reconciliation marks resources the EHR no longer has as tombstones")
    deleted = _reconcile(demo, connections, changed["deleted"])
    say(f"   tombstoned {deleted} resource(s): {', '.join(changed['deleted'])}")
    return full, incremental


def _check_incremental(incremental: SyncTotals, changed: Mapping[str, list[str]]) -> None:
    """The incremental sync fetched, and changed in the warehouse, exactly what changed on the EHR."""
    expected = Counter(ref.split("/")[0] for ref in changed["created"] + changed["updated"])
    changed_types = {t: n for t, n in incremental.fetched.items() if n}
    say(f"   fetched by type: {dict(sorted(changed_types.items()))}")
    say(f"   changed on the EHR: {dict(sorted(expected.items()))}")
    upserted = Counter({t: incremental.created[t] + incremental.updated[t] for t in incremental.fetched})
    if +upserted != +expected or +Counter(incremental.fetched) != +expected:
        raise DemoError(
            f"incremental sync fetched {dict(+Counter(incremental.fetched))} and changed {dict(+upserted)} rows; "
            f"the EHR changed {dict(expected)}"
        )


def _idle_sync(demo: _Demo, connections: Mapping[str, str]) -> None:
    """Step 7: with nothing changed, an incremental sync fetches nothing and changes no warehouse row."""
    _step(7, "A second incremental sync with nothing changed")
    before = fingerprint(demo.settings.warehouse_url)
    idle = SyncTotals()
    for conn_id in connections:
        _sync(demo, conn_id, full=False, totals=idle)
    after = fingerprint(demo.settings.warehouse_url)
    changed_rows = sum(idle.created.values()) + sum(idle.updated.values())
    say(f"   fetched {sum(idle.fetched.values())} new resource(s); warehouse rows changed: {changed_rows}")
    if changed_rows or before != after or sum(idle.fetched.values()):
        raise DemoError("the idle incremental sync fetched resources or changed warehouse rows")


def _bulk_step(demo: _Demo, api_key: str) -> None:
    """Step 8: the clinic's admin creates a group backend connection through the API; its Bulk export runs."""
    _step(8, f"Bulk $export of Group/{DEMO_GROUP} through SMART Backend Services (private_key_jwt, RS384)")
    with httpx.Client(base_url=demo.app_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as admin:
        created = admin.post(
            "/api/integrations/admin/backend-connections",
            json={"provider": "generic", "scope": "system/*.rs", "group_id": DEMO_GROUP},
        )
    if created.status_code != 201:
        raise DemoError(f"backend connection refused: HTTP {created.status_code} {created.text[:300]}")
    say(f"   {_bulk(demo, str(created.json()['connection_id']))}")


def _sync(demo: _Demo, connection_id: str, *, full: bool, totals: SyncTotals) -> float:
    from ehrsync.run_now import run_sync_now

    started = time.monotonic()
    result = run_sync_now(connection_id, full=full, settings=demo.settings, console_log_level="ERROR")
    if not result.success:
        raise DemoError(f"sync of {connection_id} failed ({', '.join(result.failed_steps)}): see `make ui`")
    totals.add(result.materializations)
    return time.monotonic() - started


def _patient_connections(ctx: Any) -> dict[str, str]:
    from sqlalchemy import select

    from store.models import Connection

    with ctx.db.session() as session:
        rows = session.execute(
            select(Connection.id, Connection.patient_id).where(Connection.tenant_id == DEMO_TENANT)
        ).all()
    return {str(cid): str(pid) for cid, pid in rows if pid}


def _reconcile(demo: _Demo, connections: Mapping[str, str], deleted_refs: list[str]) -> int:
    from ehrsync.run_now import run_reconcile_now

    total = 0
    for conn_id in connections:
        total += run_reconcile_now(conn_id, settings=demo.settings, console_log_level="ERROR").tombstoned
    if total != len(deleted_refs):
        raise DemoError(f"reconciliation tombstoned {total} resources, the EHR deleted {len(deleted_refs)}")
    return total


def _bulk(demo: _Demo, connection_id: str) -> str:
    from ehrsync.run_now import run_sync_now

    started = time.monotonic()
    with BulkProgress(demo.settings.database_url, connection_id):
        result = run_sync_now(connection_id, settings=demo.settings, console_log_level="ERROR")
    if not result.success:
        raise DemoError(f"bulk export failed ({', '.join(result.failed_steps)}): see `make ui`")
    meta = next((m for a, m in result.materializations.items() if "bulk" in a), {})
    seconds = time.monotonic() - started
    return (
        f"{meta.get('files', 0)} NDJSON files, {meta.get('fetched', 0)} resources landed, "
        f"{meta.get('created', 0)} new rows, transactionTime {meta.get('high_water_mark', '?')} "
        f"({seconds:.1f} s)"
    )
