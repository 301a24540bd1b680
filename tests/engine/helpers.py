"""Reusable set-up for sync tests and the demo: an app DB, a vault, a sync environment, and connections
authorized against a running sandbox exactly as a person (or a backend client) would, without the web service.

    env = make_environment(tmp_path, http=http)
    conn_id = connect_patient(env, sandbox, http=http)            # public client + PKCE, headless consent
    group_conn = connect_backend(env, sandbox, http=http, group_id="g1")   # private_key_jwt backend client
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import duckdb
import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from connectors.fhir import RetryPolicy
from connectors.smart import (
    ClientAuth,
    JwtClientAuth,
    PublicClientAuth,
    TokenResponse,
    build_authorize_url,
    discover,
    exchange_code,
    new_pkce,
)
from engine import SyncEnvironment
from store import AppDatabase, TokenCipher, TokenVault
from store.models import Connection, Tenant
from tests.fixtures.app_db import copy_migrated_sqlite
from tests.fixtures.client_keys import backend_client_key
from tests.fixtures.tenant_settings import bulk_allowed
from warehouse import AttachmentStore, LandingZone

# Same rules as production (Retry-After honoured, backoff, attempts), shorter floors so fault tests stay fast.
FAST_RETRY = RetryPolicy(retry_after_min_s=0.05, backoff_start_s=0.05, backoff_cap_s=0.5)
REDIRECT_URI = "http://127.0.0.1/callback"
PATIENT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
BACKEND_SCOPE = "system/*.rs"


class SandboxLike(Protocol):
    """What the helpers need of ``sandbox.SandboxServer`` (or any running sandbox)."""

    @property
    def base_url(self) -> str: ...

    @property
    def fhir_base(self) -> str: ...


@dataclass
class ClientRegistry:
    """The vault's client-auth resolver for test clients: client_id → how that client authenticates."""

    keys_dir: Path | None = None  # backend clients' test keys, so a reopened world (child process) can sign
    auths: dict[str, ClientAuth] = field(default_factory=dict)

    def __call__(self, _session: Session, conn: Connection) -> ClientAuth:
        """Registered clients by id, then saved backend keys; any other client is public (PKCE, no secret)."""
        if conn.client_id in self.auths:
            return self.auths[conn.client_id]
        saved = self.keys_dir / f"{conn.client_id}.json" if self.keys_dir else None
        if saved is not None and saved.is_file():
            data = orjson.loads(saved.read_bytes())
            self.auths[conn.client_id] = JwtClientAuth(conn.client_id, data["pem"], data["kid"], alg="RS384")
            return self.auths[conn.client_id]
        return PublicClientAuth(conn.client_id)

    def save_backend_key(self, client_id: str, pem: bytes, kid: str) -> None:
        self.auths[client_id] = JwtClientAuth(client_id, pem, kid, alg="RS384")
        if self.keys_dir is not None:
            self.keys_dir.mkdir(parents=True, exist_ok=True)
            (self.keys_dir / f"{client_id}.json").write_bytes(orjson.dumps({"pem": pem.decode(), "kid": kid}))


@dataclass
class SyncWorld:
    """A sync environment plus the client registry its vault resolves through."""

    env: SyncEnvironment
    clients: ClientRegistry
    tenant_id: str
    cipher_key: bytes


def make_environment(
    root: Path,
    *,
    http: httpx.Client | None = None,
    app_db_url: str | None = None,
    warehouse_target: str | None = None,
    cipher_key: bytes | None = None,
    tenant_id: str | None = None,
    migrate: bool = True,
    **knobs: Any,
) -> SyncWorld:
    """A migrated app DB (SQLite under ``root`` unless ``app_db_url``), vault, landing zone, attachment store and
    DuckDB warehouse (unless ``warehouse_target``) wired into one ``SyncEnvironment``.

    Pass the ``cipher_key`` and ``tenant_id`` of an earlier world to reopen it (e.g. in a child process), and
    ``migrate=False`` where that world is migrated already: a sync process never migrates (``ehrsync db migrate``
    does, at deploy time), and loading Alembic and the migration scripts costs ~12 MB of memory.
    Vendor rate limits are off unless ``rate_limits=True`` is passed: the local sandbox has no budget to protect.
    """
    knobs.setdefault("rate_limits", False)
    knobs.setdefault("retry", FAST_RETRY)
    root.mkdir(parents=True, exist_ok=True)
    if migrate and app_db_url is None:
        copy_migrated_sqlite(root / "app.db")
    db = AppDatabase.from_url(app_db_url or f"sqlite:///{root / 'app.db'}")
    if migrate:
        db.migrate()
    clients = ClientRegistry(keys_dir=root / "clients")
    key = cipher_key or os.urandom(32)
    vault = TokenVault(db, TokenCipher(key), http=http, client_auth_resolver=clients)
    env = SyncEnvironment(
        db=db,
        vault=vault,
        zone=LandingZone(root / "landing"),
        attachments=AttachmentStore(root / "attachments"),
        warehouse_target=warehouse_target or str(root / "warehouse.duckdb"),
        http=http,
        **knobs,
    )
    if tenant_id is None:
        tenant_id = uuid.uuid4().hex
        with db.session() as session:
            session.add(Tenant(id=tenant_id, name="Test practice", settings=bulk_allowed()))
            session.commit()
    return SyncWorld(env, clients, tenant_id, key)


def _admin(http: httpx.Client, sandbox: SandboxLike, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{sandbox.base_url.rstrip('/')}/admin/{path}"
    response = http.post(url, json=body) if body is not None else http.get(url)
    response.raise_for_status()
    return response.json() if response.content else None


def add_fault(http: httpx.Client, sandbox: SandboxLike, kind: str, **options: Any) -> None:
    """Arm a sandbox fault (``POST /admin/faults``): ``path`` prefix, ``times``, ``retry_after``, ``delay_s``."""
    _admin(http, sandbox, "faults", {"kind": kind, **options})


def mutate(http: httpx.Client, sandbox: SandboxLike, *, create: int = 0, update: int = 0, delete: int = 0) -> Any:
    """Create/update/delete resources on the sandbox; returns its ``{"created", "updated", "deleted"}`` refs."""
    return _admin(http, sandbox, "mutate", {"create": create, "update": update, "delete": delete, "seed": 5})


def sandbox_patients(http: httpx.Client, sandbox: SandboxLike) -> list[str]:
    """Patient ids the sandbox serves (``GET /admin/patients``)."""
    body = _admin(http, sandbox, "patients")
    items = body.get("patients", body) if isinstance(body, dict) else body
    return [str(p["id"]) if isinstance(p, dict) else str(p) for p in items]


def connect_patient(
    world: SyncWorld,
    sandbox: SandboxLike,
    *,
    http: httpx.Client,
    patient_id: str | None = None,
    scope: str = PATIENT_SCOPE,
    provider_id: str = "generic",
) -> str:
    """Register a public client, pre-approve ``patient_id`` (first patient by default), run authorize → code →
    token with PKCE, and store the connection and its tokens. Returns the connection id."""
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    _admin(http, sandbox, "clients", {"client_id": client_id, "client_type": "public", "redirect_uris": [REDIRECT_URI]})
    patient = patient_id or sandbox_patients(http, sandbox)[0]
    _admin(http, sandbox, "preapprove", {"client_id": client_id, "patient_id": patient})
    cfg = discover(sandbox.fhir_base, http=http)
    pkce = new_pkce()
    state = secrets.token_urlsafe(16)
    url = build_authorize_url(
        cfg,
        client_id=client_id,
        redirect_uri=REDIRECT_URI,
        scope=scope,
        state=state,
        aud=sandbox.fhir_base,
        code_challenge=pkce.challenge,
    )
    redirect = http.get(url, follow_redirects=False)
    location = redirect.headers.get("Location")
    if redirect.status_code not in (302, 303) or not location:
        raise AssertionError(f"authorize did not redirect (HTTP {redirect.status_code})")
    query = parse_qs(urlsplit(location).query)
    if query.get("state") != [state] or "code" not in query:
        raise AssertionError(f"authorize redirect carries no code for our state: {sorted(query)}")
    auth = PublicClientAuth(client_id)
    world.clients.auths[client_id] = auth
    token = exchange_code(
        cfg.token_endpoint,
        http=http,
        client_auth=auth,
        code=query["code"][0],
        redirect_uri=REDIRECT_URI,
        code_verifier=pkce.verifier,
    )
    conn_id = _add_connection(
        world,
        kind="patient",
        provider_id=provider_id,
        fhir_base=sandbox.fhir_base,
        client_id=client_id,
        token_endpoint=cfg.token_endpoint,
        patient_id=token.patient or patient,
        group_id=None,
        granted_scopes=token.scope,
    )
    world.env.vault.save_token_response(conn_id, token)
    return conn_id


def connect_backend(
    world: SyncWorld,
    sandbox: SandboxLike,
    *,
    http: httpx.Client,
    group_id: str | None = None,
    scope: str = BACKEND_SCOPE,
    provider_id: str = "generic",
) -> str:
    """Register a backend client with a fresh RS384 key (JWKS inline) and store a ``group`` connection (or a
    ``backend`` one when ``group_id`` is None). The vault mints tokens with client_credentials on demand."""
    client_id = f"backend-{uuid.uuid4().hex[:10]}"
    key = backend_client_key()
    kid = uuid.uuid4().hex[:8]
    register_backend_client(http, sandbox, client_id, backend_jwk(key.public_key(), kid))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    world.clients.save_backend_key(client_id, pem, kid)
    cfg = discover(sandbox.fhir_base, http=http)
    return _add_connection(
        world,
        kind="group" if group_id else "backend",
        provider_id=provider_id,
        fhir_base=sandbox.fhir_base,
        client_id=client_id,
        token_endpoint=cfg.token_endpoint,
        patient_id=None,
        group_id=group_id,
        granted_scopes=scope,
    )


def backend_jwk(public_key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    """The public JWK (RS384) a backend client registers with the EHR."""
    numbers = public_key.public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": b64(numbers.n), "e": b64(numbers.e)}


def register_backend_client(http: httpx.Client, sandbox: SandboxLike, client_id: str, jwk: dict[str, str]) -> None:
    """Register (or re-register, replacing its registration) a backend client with this JWKS at the sandbox."""
    _admin(
        http,
        sandbox,
        "clients",
        {"client_id": client_id, "client_type": "backend", "jwks": {"keys": [jwk]}, "redirect_uris": []},
    )


def connect_static(
    world: SyncWorld,
    fhir_base: str,
    *,
    patient_id: str | None = None,
    group_id: str | None = None,
    kind: str = "patient",
    scope: str = "patient/*.rs",
    token: str = "static-token",
) -> str:
    """A connection to any FHIR base with a fixed, valid-for-an-hour access token (no OAuth server)."""
    conn_id = _add_connection(
        world,
        kind=kind,
        provider_id="generic",
        fhir_base=fhir_base,
        client_id="static-client",
        token_endpoint=f"{fhir_base}/token",
        patient_id=patient_id,
        group_id=group_id,
        granted_scopes=scope,
    )
    now = datetime.now(UTC)
    world.env.vault.save_token_response(
        conn_id,
        TokenResponse(
            access_token=token,
            token_type="Bearer",
            expires_in=3600,
            scope=scope,
            patient=patient_id,
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        ),
    )
    return conn_id


def _add_connection(world: SyncWorld, **columns: Any) -> str:
    conn_id = uuid.uuid4().hex
    with world.env.db.session() as session:
        session.add(Connection(id=conn_id, tenant_id=world.tenant_id, issuer=columns["fhir_base"], **columns))
        session.commit()
    return conn_id


def content_fingerprint(warehouse_target: str, *, with_connection: bool = True) -> list[tuple[Any, ...]]:
    """Every ``fhir_resources`` row by key with what it holds (content hash, version, lastUpdated, deleted or not).

    ``Warehouse.row_fingerprint`` also covers ``landed_at`` and ``run_id``, which differ between two separate
    runs by design; this is the comparison of *content* between a crashed-and-resumed run and a clean one.
    """
    con = duckdb.connect(warehouse_target, read_only=True)
    try:
        rows = con.execute(
            "SELECT connection_id, resource_type, id, version_id, last_updated, deleted_at IS NOT NULL, content_hash "
            "FROM fhir_resources ORDER BY connection_id, resource_type, id"
        ).fetchall()
    finally:
        con.close()
    return rows if with_connection else sorted(r[1:] for r in rows)
