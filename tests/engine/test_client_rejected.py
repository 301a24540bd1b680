"""A backend/group connection whose re-acquired token the EHR refuses too is ``client_rejected`` in the same run
(issue 10), against the sandbox over real sockets.

The connectors refresh a token once on 401; a second 401 raises FhirUnauthorizedError. The engine then asks
the vault to confirm (``vault.confirm_unauthorized``), which marks the connection ``client_rejected`` and stops
the run with a message saying to check the client registration, instead of failing the request as a plain
``fhir_unauthorized`` and leaving the connection ``active`` until its next request.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from engine import run_bulk_export, runs
from engine.errors import ConnectionNotSyncableError
from sandbox import SandboxServer
from store.errors import ClientRejectedError
from store.models import AuditEvent, Connection, TokenRecord
from tests.engine.conftest import RequestLog
from tests.engine.helpers import (
    REDIRECT_URI,
    SyncWorld,
    add_fault,
    backend_jwk,
    connect_backend,
    connect_patient,
    register_backend_client,
    sandbox_patients,
)
from tests.engine.job_runs import run_sync, sync_type

GROUP = "grp0"


def _status(world: SyncWorld, connection_id: str) -> str:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return str(row.status)


@pytest.mark.parametrize("path", ["/fhir/Group", "/bulk/status", "/bulk/files"], ids=["kickoff", "poll", "download"])
def test_bulk_request_refused_after_token_reacquisition_marks_client_rejected(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, path: str
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "healthy").status == "completed"
    # the EHR now refuses every token of this client (registration revoked, key or scopes changed, ...)
    add_fault(http, shared_sb, "expired_token", path=path, times=None)
    try:
        report = run_bulk_export(world.env, conn, "rejected")
    finally:
        shared_sb.admin.clear_faults()
    assert report.status == "failed" and report.error is not None
    assert report.error.startswith("client_rejected: "), report.error
    assert "check the client registration" in report.error
    assert _status(world, conn) == "client_rejected", "marked in the run that saw the second 401"
    run = runs.require(world.env.db, "rejected")
    assert run.status == "failed" and "check the client registration" in (run.error or "")

    with pytest.raises(ConnectionNotSyncableError, match="is client_rejected, not active"):
        run_bulk_export(world.env, conn, "still-rejected")  # the state answers: no token call, no request


def test_rest_request_refused_after_token_reacquisition_marks_client_rejected(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    """The engine's REST path with a backend token: a backend connection reading one patient's record.

    Production's jobs never run the per-type steps for a backend connection (it exports in bulk, and since
    issue 12 its partition is in ``bulk_connections``, which the per-type assets refuse), so the type's two
    steps run as the engine runs them (``sync_type``); the refusal of any further run goes through ``run_sync``.
    """
    conn = connect_backend(world, shared_sb, http=http)
    with world.env.db.session() as session:
        row = session.get(Connection, conn)
        assert row is not None
        row.patient_id = sandbox_patients(http, shared_sb)[0]
        session.commit()
    assert sync_type(world, conn, "Patient").error is None
    add_fault(http, shared_sb, "expired_token", path="/fhir/Patient", times=None)
    try:
        with pytest.raises(ClientRejectedError, match="check the client registration"):
            sync_type(world, conn, "Patient")  # in a run, the landing step fails with this error
    finally:
        shared_sb.admin.clear_faults()
    assert _status(world, conn) == "client_rejected", "marked in the run that saw the second 401"
    with pytest.raises(ConnectionNotSyncableError, match="client_rejected"):
        run_sync(world, conn, types=["Condition"])  # the state answers: every further request would be refused


def _client_id(world: SyncWorld, connection_id: str) -> str:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return str(row.client_id)


def _registered_jwk(world: SyncWorld, client_id: str) -> dict[str, str]:
    """The public JWK of the key ehrsync signs this backend client's assertions with."""
    assert world.clients.keys_dir is not None
    saved = orjson.loads((world.clients.keys_dir / f"{client_id}.json").read_bytes())
    key = serialization.load_pem_private_key(saved["pem"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return backend_jwk(key.public_key(), saved["kid"])


def _refuse_client(world: SyncWorld, sb: SandboxServer, http: httpx.Client, conn: str, refusal: str) -> None:
    """The EHR refuses the client's client_credentials grant: ``unauthorized_client`` and ``invalid_grant`` (Epic's
    answer to a bad or expired client assertion, or a key it does not know) forced by the sandbox's oauth_error
    fault; ``invalid_client`` for real, the registration holding another key (the JWKS changed)."""
    if refusal in ("unauthorized_client", "invalid_grant"):
        add_fault(http, sb, "oauth_error", path="/oauth/token", error=refusal, times=None)
        return
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    register_backend_client(http, sb, _client_id(world, conn), backend_jwk(other.public_key(), "other-kid"))


def _refresh_audit(world: SyncWorld, connection_id: str) -> list[tuple[str, object, object]]:
    with world.env.db.session() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.connection_id == connection_id, AuditEvent.action == "token.refresh")
            .order_by(AuditEvent.id)
        ).all()
        return [(e.outcome, e.detail.get("error_code"), e.detail.get("reason")) for e in events]


@pytest.mark.parametrize("refusal", ["unauthorized_client", "invalid_client", "invalid_grant"])
def test_client_credentials_grant_refused_for_good_is_client_rejected_sal32_sal36(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog, refusal: str
) -> None:
    """SAL-32: a backend connection gets its tokens by a client_credentials grant. SAL-36's error table
    (smart-app-launch.md §8, row "token | invalid_client (400/401) | credentials/JWKS problem: stop and alert") and
    RFC 6749 §5.2 (``unauthorized_client``: this client may not use this grant type): asking again changes nothing
    until an admin fixes the registration. ``invalid_grant`` too: to a client_credentials grant it refuses the client's
    assertion or key (Epic), and a backend connection has no patient to re-authorize it (never ``needs_reauth``).
    One token request, the run fails naming the refusal and the registration,
    the connection is ``client_rejected`` (audited), later runs stop without a token request, and the admin's retry
    after fixing the registration (``reactivate``, POST /api/integrations/smart/refresh) makes it active."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    client_id = _client_id(world, conn)
    _refuse_client(world, shared_sb, http, conn, refusal)
    request_log.clear()

    report = run_bulk_export(world.env, conn, "refused")

    assert report.status == "failed" and report.error is not None
    assert report.error.startswith("client_rejected: "), report.error
    assert f"refused the client_credentials grant ({refusal}: " in report.error  # with the EHR's description
    assert refusal != "invalid_client" or "found 0" in report.error  # e.g. "no RSA key with kid ..., found 0"
    assert "check the client registration" in report.error
    assert len(request_log.paths("/oauth/token", method="POST")) == 1  # final: not retried
    assert not request_log.paths("/fhir/Group")
    assert _status(world, conn) == "client_rejected"
    assert _refresh_audit(world, conn) == [("client_rejected", refusal, "client_grant_refused")]
    run = runs.require(world.env.db, "refused")
    assert run.status == "failed" and f"grant ({refusal}: " in (run.error or "")

    with pytest.raises(ConnectionNotSyncableError, match="is client_rejected, not active"):
        run_bulk_export(world.env, conn, "still-refused")
    with pytest.raises(ClientRejectedError, match=rf"refused the client_credentials grant \({refusal}\)"):
        world.env.vault.get_access_token(conn)  # the state answers, naming why
    assert len(request_log.paths("/oauth/token", method="POST")) == 1

    shared_sb.admin.clear_faults()  # the admin fixes the registration...
    register_backend_client(http, shared_sb, client_id, _registered_jwk(world, client_id))
    assert world.env.vault.reactivate(conn)  # ...and retries: a new mint, active again
    assert _status(world, conn) == "active"
    assert run_bulk_export(world.env, conn, "fixed").status == "completed"


@pytest.mark.parametrize("fault", ["temporarily_unavailable", "500"])
def test_client_credentials_grant_failing_transiently_stays_active_sal32_sal36(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog, fault: str
) -> None:
    """SAL-36's error table (smart-app-launch.md §8, row "any | 5xx, timeout, temporarily_unavailable | bounded
    exponential backoff + jitter"): a backend connection's client_credentials grant (SAL-32) failing so is retried
    within the run, fails the run, and leaves the connection active: the next run mints again."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    if fault == "500":
        add_fault(http, shared_sb, "500", path="/oauth/token", times=None)
    else:
        add_fault(http, shared_sb, "oauth_error", path="/oauth/token", error=fault, times=None)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "unavailable")
    assert report.status == "failed" and report.error is not None and "client_rejected" not in report.error
    assert len(request_log.paths("/oauth/token", method="POST")) == 3  # the grant's attempts, backing off
    assert _status(world, conn) == "active"
    assert [outcome for outcome, _, _ in _refresh_audit(world, conn)] == ["transient_failure"]
    shared_sb.admin.clear_faults()
    assert run_bulk_export(world.env, conn, "available").status == "completed"


def _patient_client_turned_confidential(world: SyncWorld, sb: SandboxServer, http: httpx.Client, conn: str) -> str:
    """The app's registration at the EHR changes under the patient connection: its client is confidential now, with
    a secret this side does not hold, so the EHR refuses the client's authentication (``invalid_client``, 401)."""
    client_id = _client_id(world, conn)
    body = {"client_id": client_id, "client_type": "confidential-symmetric", "client_secret": "held-elsewhere"}
    http.post(f"{sb.base_url}/admin/clients", json={**body, "redirect_uris": [REDIRECT_URI]}).raise_for_status()
    return client_id


def test_patient_refresh_refused_invalid_client_is_client_rejected_and_retried_by_the_admin(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """RFC 6749 §5.2 ``invalid_client`` to a patient connection's refresh: the app's credentials, not the patient's
    grant. The run that meets it fails ``client_rejected`` after one token request (not retried, not one per type),
    the connection is ``client_rejected`` (not ``needs_reauth``: no re-authorization link), its refresh token kept;
    the next sync sends nothing to the EHR; the admin's retry before the registration is fixed is refused again and
    changes nothing, and after the fix refreshes with the kept token and makes the connection active again."""
    conn = connect_patient(world, shared_sb, http=http)
    client_id = _patient_client_turned_confidential(world, shared_sb, http, conn)
    add_fault(http, shared_sb, "expired_token", path="/fhir/", times=None)  # every token refused: a refresh is due
    request_log.clear()
    try:
        report = run_sync(world, conn, types=["Patient", "Condition", "Observation"])
    finally:
        shared_sb.admin.clear_faults()

    assert report.status == "failed" and not any(r.created for r in report.types.values())
    errors = list(report.failed_types.values())  # the step that met the refusal; the others stop on the state
    refusal = "refused the client's authentication on the refresh_token grant (invalid_client"
    [refused] = [e for e in errors if refusal in e]
    assert refused.startswith("store.errors.ClientRejectedError: ") and "need not authorize again" in refused
    assert len(errors) == 3 and all("is client_rejected" in e for e in errors if e != refused), errors
    assert len(request_log.paths("/oauth/token", method="POST")) == 1  # final: not retried, not one per type
    assert _status(world, conn) == "client_rejected"
    assert _refresh_audit(world, conn) == [("client_rejected", "invalid_client", "client_auth_refused")]
    with world.env.db.session() as session:
        row = session.get(TokenRecord, conn)
        assert row is not None and row.version == 1 and row.refresh_token_ct is not None  # the grant kept

    request_log.clear()
    with pytest.raises(ConnectionNotSyncableError, match="is client_rejected, not active"):
        run_sync(world, conn, types=["Condition"])
    assert request_log.urls == []  # nothing sent to the EHR

    with pytest.raises(ClientRejectedError, match="refused the client's authentication"):
        world.env.vault.reactivate(conn)  # the admin retries before the registration is fixed
    assert _status(world, conn) == "client_rejected"
    assert len(request_log.paths("/oauth/token", method="POST")) == 1

    register = {"client_id": client_id, "client_type": "public", "redirect_uris": [REDIRECT_URI]}
    http.post(f"{shared_sb.base_url}/admin/clients", json=register).raise_for_status()  # the registration fixed
    assert world.env.vault.reactivate(conn)  # the kept refresh token works: active again
    assert _status(world, conn) == "active"
    assert run_sync(world, conn, types=["Condition"]).status == "completed"
