"""``make demo``: the whole product on one machine, with no EHR account.

Sandbox EHR → patients authorize through the auth service (SMART standalone launch, PKCE, tokens sealed in the
vault) → Dagster syncs each connection (REST, `_lastUpdated`) → Parquet landing → DuckDB upsert → changes on the
EHR → incremental sync fetching only those → a second incremental sync fetching nothing → a Bulk `$export` of a
group through SMART Backend Services → a summary. Every step goes through the same code production uses.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

DEMO_TENANT = "demo-clinic"
PATIENT_CLIENT = "ehrsync-demo"
BACKEND_CLIENT = "ehrsync-demo-bulk"
DEMO_GROUP = "grp2"
ENV_FILE = "ehrsync.env"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


@dataclass
class SyncTotals:
    """Per connection and phase, what each resource type fetched and how the warehouse changed."""

    fetched: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    runs: int = 0

    def add(self, materializations: Mapping[str, Mapping[str, Any]]) -> None:
        self.runs += 1
        for asset, meta in materializations.items():
            rtype = asset.rsplit("/", 1)[-1]
            if asset.startswith("landing/"):
                self.fetched[rtype] += int(meta.get("fetched", 0) or 0)
            elif asset.startswith("warehouse/"):
                self.created[rtype] += int(meta.get("created", 0) or 0)
                self.updated[rtype] += int(meta.get("updated", 0) or 0)


def _say(message: str = "") -> None:
    print(message, flush=True)


def _step(number: int, title: str) -> None:
    _say(f"\n== {number}. {title}")


def demo_environment(state_dir: Path) -> dict[str, str]:
    """Settings the demo and ``make ui`` share, kept in ``<state>/ehrsync.env`` (mode 600; holds the vault key)."""
    env_path = state_dir / ENV_FILE
    values: dict[str, str] = {}
    if env_path.exists():
        for line in env_path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    values.setdefault("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    values.setdefault("EHRSYNC_STATE_DIR", str(state_dir))
    values.setdefault("DATABASE_URL", f"sqlite:///{state_dir / 'app.db'}")
    values.setdefault("WAREHOUSE_URL", str(state_dir / "warehouse.duckdb"))
    state_dir.mkdir(parents=True, exist_ok=True)
    env_path.write_text(
        "# written by `ehrsync demo`; read by `ehrsync ui`. Holds the demo vault key: keep it private.\n"
        + "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    )
    env_path.chmod(0o600)
    return values


def _signing_key(state_dir: Path) -> Path:
    """An RSA key for private_key_jwt (RS384), generated once per demo state."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = state_dir / "keys" / "ehr_jwt.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return path


@contextmanager
def _auth_service(state_dir: Path, env: Mapping[str, str], fhir_base: str) -> Iterator[tuple[str, Any]]:
    from auth_service.app import create_app
    from auth_service.core.config import load_settings
    from ehrsync.services import serve_in_thread

    def factory(base_url: str) -> Any:
        settings = load_settings(
            INTEGRATIONS_TOKEN_ENC_KEY=env["INTEGRATIONS_TOKEN_ENC_KEY"],
            DATABASE_URL=env["DATABASE_URL"],
            APP_BASE_URL=base_url,
            SMART_ISSUER_ALLOWLIST=fhir_base,
            EHR_JWT_PRIVATE_KEY=str(_signing_key(state_dir)),
            EHR_JWT_KEY_ID="demo-key-1",
        )
        return create_app(settings)

    with serve_in_thread(factory) as running:
        yield running.base_url, running.app.state.ctx


def _practice(fhir_base: str) -> dict[str, Any]:
    return {
        "smartFhir": {"enabled": True, "issuer": fhir_base, "fhirBaseUrl": fhir_base, "clientId": PATIENT_CLIENT},
        "ehrIntegrations": {
            "enabledProviders": ["generic"],
            "providerConfigs": {
                "generic": {"fhirBaseUrl": fhir_base, "clientId": BACKEND_CLIENT, "kid": "demo-key-1"},
            },
            "enableBulkExport": True,
        },
    }


def _authorize_patient(app_url: str, sandbox_admin: Any, patient_id: str) -> None:
    """What a patient's browser does, headless: the sandbox pre-approves this patient instead of a consent click."""
    sandbox_admin.preapprove(PATIENT_CLIENT, patient_id)
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        start = browser.get(
            f"{app_url}/api/integrations/smart/login", params={"tenant": DEMO_TENANT, "provider": "smart"}
        )
        if start.status_code != 302:
            raise DemoError(f"login did not redirect to the EHR: HTTP {start.status_code} {start.text[:200]}")
        consent = browser.get(start.headers["location"])
        if consent.status_code not in (302, 303):
            raise DemoError(f"the sandbox did not approve: HTTP {consent.status_code}")
        callback = consent.headers["location"]
        if "error" in parse_qs(urlsplit(callback).query):
            raise DemoError(f"authorization refused: {parse_qs(urlsplit(callback).query)['error'][0]}")
        done = browser.get(callback)
        if done.status_code != 303:
            raise DemoError(f"callback failed: HTTP {done.status_code} {done.text[:200]}")


def _sync(connection_id: str, *, full: bool, totals: SyncTotals) -> float:
    from ehrsync.run_now import run_sync_now

    started = time.monotonic()
    result = run_sync_now(connection_id, full=full, console_log_level="ERROR")
    if not result.success:
        raise DemoError(f"sync of {connection_id} failed ({', '.join(result.failed_steps)}): see `make ui`")
    totals.add(result.materializations)
    return time.monotonic() - started


def _fingerprint(warehouse_url: str) -> str:
    from warehouse import open_warehouse

    with open_warehouse(warehouse_url, read_only=True) as wh:
        return wh.row_fingerprint()


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    _say(line.format(*header))
    _say(line.format(*["-" * w for w in widths]))
    for row in rows:
        _say(line.format(*row))


def run_demo(state_dir: Path, *, patients: int = 25, connect: int = 3, keep: bool = False) -> int:
    """Run every step; returns the process exit code (0 when every check held)."""
    from sandbox import SandboxConfig, SandboxServer

    state_dir = state_dir.resolve()
    if state_dir.exists() and not keep:
        shutil.rmtree(state_dir)
    env = demo_environment(state_dir)
    os.environ.update(env)
    # Production keeps the 5-minute safety overlap (BDX-28): it re-reads recent changes, which the idempotent
    # upsert absorbs. The demo runs its syncs seconds apart, so it turns the overlap off to show exact counts.
    os.environ["EHRSYNC_SYNC_OVERLAP_SECONDS"] = "0"
    os.environ.pop("DAGSTER_HOME", None)

    _step(1, f"Sandbox EHR with {patients} synthetic patients")
    with SandboxServer(SandboxConfig(patients=patients, seed=7, port=0)) as sb:
        _say(f"   FHIR base {sb.fhir_base}")
        with _auth_service(state_dir, env, sb.fhir_base) as (app_url, ctx):
            _say(f"   auth service {app_url}")
            return _run_steps(state_dir, env, sb, app_url, ctx, connect)


def _run_steps(state_dir: Path, env: Mapping[str, str], sb: Any, app_url: str, ctx: Any, connect: int) -> int:
    from auth_service.services.tenants import bootstrap_tenant
    from auth_service.tenants.settings import TenantSeed

    _step(2, f"{connect} patients authorize ehrsync (SMART standalone launch, PKCE S256, tokens sealed AES-256-GCM)")
    sb.admin.register_client(PATIENT_CLIENT, "public", redirect_uris=[f"{app_url}/api/integrations/smart/callback"])
    sb.admin.register_client(
        BACKEND_CLIENT,
        "backend",
        jwks_url=f"{app_url}/api/integrations/ehr/jwks",
        allowed_scopes="system/*.rs",
    )
    seed = TenantSeed.model_validate(
        {"id": DEMO_TENANT, "name": "Demo Clinic", "practice_settings": _practice(sb.fhir_base)}
    )
    with ctx.db.session() as session, session.begin():
        api_key = bootstrap_tenant(session, seed, ctx.cipher).api_key
    admin = httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    patient_ids = sb.admin.patients()[:connect]
    for pid in patient_ids:
        _authorize_patient(app_url, sb.admin, pid)
    connections = _patient_connections(ctx)
    for conn_id, pid in connections.items():
        _say(f"   Patient/{pid} -> connection {conn_id}")
    if sorted(connections.values()) != sorted(patient_ids):
        raise DemoError(f"expected connections for {patient_ids}, found {sorted(connections.values())}")

    _step(3, "Full sync of every resource type, per connection (Dagster partition = connection)")
    full = SyncTotals()
    for conn_id in connections:
        seconds = _sync(conn_id, full=True, totals=full)
        _say(f"   {conn_id}: done in {seconds:.1f} s")
    _say(f"   fetched {sum(full.fetched.values())} resources into Parquet, {sum(full.created.values())} rows created")

    _step(4, "Records change on the EHR (updates, deletes, new observations) for the connected patients")
    changed = sb.admin.mutate(create=3, update=6, delete=2, seed=2026, patients=list(connections.values()))
    for kind in ("created", "updated", "deleted"):
        _say(f"   {kind:<8} {', '.join(changed[kind])}")

    _step(5, "Incremental sync (_lastUpdated > each connection's high-water mark; overlap 0 s for the demo)")
    incremental = SyncTotals()
    for conn_id in connections:
        _sync(conn_id, full=False, totals=incremental)
    expected = Counter(ref.split("/")[0] for ref in changed["created"] + changed["updated"])
    changed_types = {t: n for t, n in incremental.fetched.items() if n}
    _say(f"   fetched by type: {dict(sorted(changed_types.items()))}")
    _say(f"   changed on the EHR: {dict(sorted(expected.items()))}")
    upserted = Counter({t: incremental.created[t] + incremental.updated[t] for t in incremental.fetched})
    if +upserted != +expected or +Counter(incremental.fetched) != +expected:
        raise DemoError(
            f"incremental sync fetched {dict(+Counter(incremental.fetched))} and changed {dict(+upserted)} rows; "
            f"the EHR changed {dict(expected)}"
        )

    _step(6, "Deletes: reconciliation marks resources the EHR no longer has as tombstones")
    deleted = _reconcile(connections, changed["deleted"])
    _say(f"   tombstoned {deleted} resource(s): {', '.join(changed['deleted'])}")

    _step(7, "A second incremental sync with nothing changed")
    before = _fingerprint(env["WAREHOUSE_URL"])
    idle = SyncTotals()
    for conn_id in connections:
        _sync(conn_id, full=False, totals=idle)
    after = _fingerprint(env["WAREHOUSE_URL"])
    changed_rows = sum(idle.created.values()) + sum(idle.updated.values())
    _say(f"   fetched {sum(idle.fetched.values())} new resource(s); warehouse rows changed: {changed_rows}")
    if changed_rows or before != after or sum(idle.fetched.values()):
        raise DemoError("the idle incremental sync fetched resources or changed warehouse rows")

    _step(8, f"Bulk $export of Group/{DEMO_GROUP} through SMART Backend Services (private_key_jwt, RS384)")
    created = admin.post(
        "/api/integrations/admin/backend-connections",
        json={"provider": "generic", "scope": "system/*.rs", "group_id": DEMO_GROUP},
    )
    if created.status_code != 201:
        raise DemoError(f"backend connection refused: HTTP {created.status_code} {created.text[:300]}")
    group_conn = str(created.json()["connection_id"])
    bulk = _bulk(group_conn)
    _say(f"   {bulk}")

    _step(9, "Summary: the warehouse (DuckDB) as an analyst sees it")
    _summary(env["WAREHOUSE_URL"], full, incremental)
    _say(f"\nState kept in {state_dir} ({ENV_FILE} holds the demo's settings and vault key).")
    _say("Open the Dagster UI over it with `make ui` (assets, one partition per connection, runs with metadata).")
    admin.close()
    return 0


def _patient_connections(ctx: Any) -> dict[str, str]:
    from sqlalchemy import select

    from store.models import Connection

    with ctx.db.session() as session:
        rows = session.execute(
            select(Connection.id, Connection.patient_id).where(Connection.tenant_id == DEMO_TENANT)
        ).all()
    return {str(cid): str(pid) for cid, pid in rows if pid}


def _reconcile(connections: Mapping[str, str], deleted_refs: list[str]) -> int:
    from ehrsync.run_now import run_reconcile_now

    total = 0
    for conn_id in connections:
        total += run_reconcile_now(conn_id, console_log_level="ERROR")
    if total != len(deleted_refs):
        raise DemoError(f"reconciliation tombstoned {total} resources, the EHR deleted {len(deleted_refs)}")
    return total


class BulkProgress:
    """Prints a Bulk export's progress while it runs, read from the persisted job state (BDX-08) every half second:
    the same rows a restarted run resumes from, so what is shown is what is durable."""

    def __init__(self, database_url: str, connection_id: str) -> None:
        self._database_url = database_url
        self._connection_id = connection_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bulk-progress", daemon=True)

    def __enter__(self) -> BulkProgress:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from sqlalchemy import func, select

        from engine.models import BulkJob, BulkJobFile
        from store import AppDatabase

        db = AppDatabase.from_url(self._database_url)
        last = ""
        try:
            while not self._stop.wait(0.5):
                with db.session() as session:
                    job = session.scalars(
                        select(BulkJob)
                        .where(BulkJob.connection_id == self._connection_id)
                        .order_by(BulkJob.requested_at.desc())
                        .limit(1)
                    ).first()
                    if job is None:
                        continue
                    states = dict(
                        session.execute(
                            select(BulkJobFile.state, func.count())
                            .where(BulkJobFile.job_id == job.id)
                            .group_by(BulkJobFile.state)
                        ).all()
                    )
                total = sum(states.values())
                line = f"   export {job.status}" + (f": {states.get('done', 0)}/{total} files landed" if total else "")
                if line != last:
                    _say(line)
                    last = line
        finally:
            db.dispose()


def _bulk(connection_id: str) -> str:
    from ehrsync.run_now import run_sync_now

    started = time.monotonic()
    with BulkProgress(os.environ["DATABASE_URL"], connection_id):
        result = run_sync_now(connection_id, console_log_level="ERROR")
    if not result.success:
        raise DemoError(f"bulk export failed ({', '.join(result.failed_steps)}): see `make ui`")
    meta = next((m for a, m in result.materializations.items() if "bulk" in a), {})
    seconds = time.monotonic() - started
    return (
        f"{meta.get('files', 0)} NDJSON files, {meta.get('fetched', 0)} resources landed, "
        f"{meta.get('created', 0)} new rows, transactionTime {meta.get('high_water_mark', '?')} "
        f"({seconds:.1f} s)"
    )


def _summary(warehouse_url: str, full: SyncTotals, incremental: SyncTotals) -> None:
    from warehouse import open_warehouse

    with open_warehouse(warehouse_url, read_only=True) as wh:
        per_type: dict[str, list[int]] = {}
        for row in wh.summary():
            counts = per_type.setdefault(str(row["resource_type"]), [0, 0])
            counts[0] += int(row["live"])
            counts[1] += int(row["deleted"])
    rows = [
        [rtype, str(full.fetched.get(rtype, 0)), str(incremental.fetched.get(rtype, 0)), str(live), str(dead)]
        for rtype, (live, dead) in sorted(per_type.items())
    ]
    _table(rows, ["resource type", "full sync", "incremental", "live rows", "tombstones"])
