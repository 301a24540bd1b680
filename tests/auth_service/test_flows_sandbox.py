"""Full SMART flows against the sandbox EHR over real sockets: each client type, EHR + standalone launch,
token refresh, revocation, the write gate and log redaction (SAL-06..15, 21, 27..32, 34, 38, 39)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.auth_service.ehr import (
    authorize_headless,
    patient_ids,
    running_service,
    sandbox_admin,
    smart_practice,
)
from tests.auth_service.keyutil import ec_pem
from tests.auth_service.logcapture import capture_all_logs


def register(sandbox: Any, service: Any, client_id: str, client_type: str, **extra: Any) -> None:
    sandbox_admin(
        sandbox,
        "clients",
        {"client_id": client_id, "client_type": client_type, "redirect_uris": [service.redirect_uri], **extra},
    )


def connect(sandbox: Any, service: Any, client_id: str, patient: str, start: str | None = None) -> str:
    sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": patient})
    r = authorize_headless(
        service, start or f"{service.base_url}/api/integrations/smart/login?tenant=t1&provider=smart"
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/connect/done"  # SAL-39: no code in the redirect
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    status = service.admin("GET", "/api/integrations/smart/status").json()
    return str(status["connection_id"])


def test_standalone_public_client_full_flow_sal07_sal27_sal38(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with capture_all_logs() as logs, running_service(make_settings, sandbox, smart_practice(sandbox, "pub-app")) as svc:
        register(sandbox, svc, "pub-app", "public")
        conn_id = connect(sandbox, svc, "pub-app", pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["patient"] == pid and status["status"] == "active"
        assert "patient/*.rs" in status["granted_scopes"].split()
        assert status["fhir_user"], status  # id_token validated (SAL-33) and fhirUser recorded
        assert status["token"]["expires_at"]
        svc.seen["access_token"] = svc.ctx.vault.get_access_token(conn_id)
        read = svc.admin("GET", "/api/integrations/smart/test/patient").json()
        assert read["id"] == pid and "name" not in read  # ids only, no PHI
        probe = svc.admin("POST", "/api/integrations/admin/providers/smart/test").json()
        assert probe["ok"] and probe["discovery"]["ok"] and probe["patient_read"]["id"] == pid
        before = status["token"]["expires_at"]
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["expires_at"] >= before
        svc.seen["access_token_2"] = svc.ctx.vault.get_access_token(conn_id)
        gone = svc.admin("POST", "/api/integrations/smart/disconnect", json={"connection_id": conn_id}).json()
        assert gone["status"] == "disconnected" and gone["revoked_at_server"] is True  # SAL-34
        again = svc.admin("GET", "/api/integrations/smart/test/patient", params={"connection_id": conn_id})
        assert again.status_code == 409 and again.json()["error"] == "needs_reauth"
        actions = {e["action"] for e in svc.admin("GET", "/api/integrations/admin/audit").json()}
        assert {
            "authorize.start",
            "authorize.complete",
            "token.refresh",
            "data.read",
            "connection.disconnect",
        } <= actions
    assert svc.seen.keys() >= {"code", "state", "access_token"}
    assert "GET /api/integrations/smart/callback?" in logs.text  # the access log line was captured
    for name, secret in svc.seen.items():
        assert secret not in logs.text, f"{name} leaked into the logs"  # SAL-38
    assert "code=[REDACTED]" in logs.text


def test_ehr_launch_sal06(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[1]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "launch-app")) as svc:
        register(sandbox, svc, "launch-app", "public")
        launch = sandbox_admin(sandbox, "launch", {"patient_id": pid})["launch"]
        start = f"{svc.base_url}/api/integrations/smart/launch?iss={sandbox.fhir_base}&launch={launch}"
        conn_id = connect(sandbox, svc, "launch-app", pid, start)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["patient"] == pid


def test_confidential_symmetric_client_sal28(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "sym-app")) as svc:
        register(sandbox, svc, "sym-app", "confidential-symmetric", client_secret="sym-secret-123")
        put = svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "sym-secret-123"})
        assert put.status_code == 200, put.text
        conn_id = connect(sandbox, svc, "sym-app", pid)
        assert svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id}).status_code == 200


def test_wrong_secret_is_invalid_client(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "sym-bad")) as svc:
        register(sandbox, svc, "sym-bad", "confidential-symmetric", client_secret="right-secret")
        svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "wrong-secret"})
        sandbox_admin(sandbox, "preapprove", {"client_id": "sym-bad", "patient_id": pid})
        r = authorize_headless(svc, f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart")
        assert r.status_code == 502 and r.json()["error"] == "invalid_client"


@pytest.mark.parametrize("key_kind", ["RS384", "ES384"])
def test_private_key_jwt_client_sal29(make_settings, sandbox, key_kind: str) -> None:
    pid = patient_ids(sandbox)[0]
    extra = {"EHR_JWT_PRIVATE_KEY": ec_pem(), "EHR_JWT_KEY_ID": "ec-kid"} if key_kind == "ES384" else {}
    client_id = f"jwt-app-{key_kind.lower()}"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client_id), **extra) as svc:
        register(
            sandbox, svc, client_id, "confidential-asymmetric", jwks_url=f"{svc.base_url}/api/integrations/ehr/jwks"
        )
        kid = svc.ctx.settings.EHR_JWT_KEY_ID
        assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": kid}).status_code == 200
        conn_id = connect(sandbox, svc, client_id, pid)
        assert svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id}).status_code == 200


def test_backend_services_sal32(make_settings, sandbox) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "bulk-app")) as svc:
        register(
            sandbox,
            svc,
            "bulk-app",
            "backend",
            jwks_url=f"{svc.base_url}/api/integrations/ehr/jwks",
            allowed_scopes="system/*.rs",
        )
        svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": svc.ctx.settings.EHR_JWT_KEY_ID})
        r = svc.admin(
            "POST",
            "/api/integrations/admin/backend-connections",
            json={"provider": "smart", "scope": "system/Patient.rs"},
        )
        assert r.status_code == 201, r.text
        conn_id = r.json()["connection_id"]
        assert "system/Patient" in r.json()["granted_scopes"]
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["kind"] == "backend" and status["token"]["has_refresh_token"] is False
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text


def test_write_gate_sal_dwb42(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    practice = smart_practice(sandbox, "w-app", enableWrite=True, enableNoteCreate=True)
    with running_service(make_settings, sandbox, practice, SMART_ENABLE_WRITE="false") as svc:
        register(sandbox, svc, "w-app", "public")
        connect(sandbox, svc, "w-app", pid)
        r = svc.admin("POST", "/api/integrations/smart/test/note", json={"text": "hello"})
        assert r.status_code == 409
        body = r.json()
        assert body["code"] == "WRITE_NOT_SUPPORTED" and body["reason"] == "vendor_disabled"
        assert body["error"] == "write_not_supported"
        assert body["tenant"] == "t1" and body["vendor"] == "smart"


def test_write_gate_open_creates_note(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    practice = smart_practice(sandbox, "w2-app", enableWrite=True, enableNoteCreate=True)
    with running_service(make_settings, sandbox, practice, SMART_ENABLE_WRITE="true") as svc:
        register(sandbox, svc, "w2-app", "public")
        conn_id = connect(sandbox, svc, "w2-app", pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert (
            "DocumentReference.c" in status["granted_scopes"] or "DocumentReference.write" in status["granted_scopes"]
        )
        r = svc.admin("POST", "/api/integrations/smart/test/note", json={"text": "Follow-up in 2 weeks."})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "pending" and r.json()["created"] is True  # into the outbox, not sent here
        again = svc.admin("POST", "/api/integrations/smart/test/note", json={"text": "Follow-up in 2 weeks."})
        assert (again.json()["note_id"], again.json()["created"]) == (r.json()["note_id"], False)  # one note


def test_vendor_plugin_provider_with_secret(make_settings, sandbox) -> None:
    """A plugin-configured provider (Epic's schema and scopes) chosen by id, confidential client (SAL-28)."""
    pid = patient_ids(sandbox)[3]
    practice: dict[str, Any] = {"ehrIntegrations": {"enabledProviders": []}}
    with running_service(make_settings, sandbox, practice) as svc:
        register(sandbox, svc, "epic-app", "confidential-symmetric", client_secret="epic-secret-1")
        config = {"fhirBaseUrl": sandbox.fhir_base, "clientId": "epic-app", "clientSecret": "epic-secret-1"}
        assert svc.admin("PUT", "/api/integrations/admin/providers/epic", json=config).status_code == 200
        login = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=epic"
        refused = svc.admin("GET", "/api/integrations/smart/login", params={"tenant": "t1", "provider": "epic"})
        assert refused.status_code == 404 and refused.json()["error"] == "not_found"  # not enabled yet: not offered
        assert svc.admin("GET", "/api/integrations/admin/providers/epic").json()["enabled"] is False
        assert svc.admin("POST", "/api/integrations/admin/providers/epic/enable").status_code == 200
        conn_id = connect(sandbox, svc, "epic-app", pid, login)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["provider"] == "epic" and "patient/Observation.rs" in status["granted_scopes"].split()
        health = svc.admin("GET", "/api/integrations/admin/health").json()
        assert health["providers"][0]["connections"] == {"active": 1}


def test_smart_v1_server_sal04_sal20(make_settings) -> None:
    """A v1 server (endpoints only in the CapabilityStatement): v1 scope spelling, connection flagged v1."""
    from sandbox import SandboxConfig, SandboxServer

    with SandboxServer(SandboxConfig(patients=3, seed=3, profile="v1")) as v1:
        pid = patient_ids(v1)[0]
        with running_service(make_settings, v1, smart_practice(v1, "v1-app")) as svc:
            register(v1, svc, "v1-app", "public")
            conn_id = connect(v1, svc, "v1-app", pid)
            status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
            assert status["smart_v1"] is True
            assert ".rs" not in status["granted_scopes"]
            events = svc.admin("GET", "/api/integrations/admin/audit").json()
            asked = next(e for e in events if e["action"] == "authorize.start")["detail"]["scope"]
            assert "patient/*.read" in asked.split() and ".rs" not in asked


@pytest.mark.parametrize("return_to", [None, "/connect/done?from=settings"])
def test_sal39_callback_answers_no_store_no_referrer_and_redirects_to_a_url_without_the_code(
    make_settings, sandbox, return_to: str | None
) -> None:
    """SAL-39: the callback (its URL holds the code) answers ``Referrer-Policy: no-referrer`` and
    ``Cache-Control: no-store`` and redirects to the page asked for (``return_to``) or ``/connect/done``, a URL
    without the code or state."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "sal39-app")) as svc:
        register(sandbox, svc, "sal39-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "sal39-app", "patient_id": pid})
        start = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart"
        r = authorize_headless(svc, start + (f"&return_to={quote(return_to)}" if return_to else ""))
    assert r.status_code == 303, r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["location"] == (return_to or "/connect/done")
    assert svc.seen["code"] not in r.headers["location"] and svc.seen["state"] not in r.headers["location"]


@pytest.mark.parametrize("slash", ["", "/"])
def test_sal10_the_authorize_request_aud_is_the_configured_fhir_base_byte_for_byte(
    make_settings, sandbox, slash: str
) -> None:
    """SAL-10: ``aud`` is the FHIR base exactly as configured and allow-listed, its trailing slash kept or left
    out as written (the launch starts from the real auth service against the sandbox's discovery)."""
    base = sandbox.fhir_base + slash
    practice = {"smartFhir": {**smart_practice(sandbox, "sal10-app")["smartFhir"], "issuer": base, "fhirBaseUrl": base}}
    with running_service(make_settings, sandbox, practice, SMART_ISSUER_ALLOWLIST=base) as svc:
        register(sandbox, svc, "sal10-app", "public")
        with httpx.Client(timeout=30, follow_redirects=False) as browser:
            r = browser.get(f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart")
    assert r.status_code == 302, r.text
    assert parse_qs(urlsplit(r.headers["location"]).query)["aud"] == [base]
