"""Error rows of docs/TROUBLESHOOTING.md produced by a real EHR (the sandbox with its fault knobs):
narrower grants (SAL-21), invalid_grant, discovery_failed, needs_reauth (SAL-25), write-gate reasons."""

from __future__ import annotations

from typing import Any

from tests.auth_service.ehr import (
    authorize_headless,
    patient_ids,
    running_service,
    sandbox_admin,
    smart_practice,
)
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_flows_sandbox import connect, register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"


def settings(sandbox: Any, **flags: Any) -> None:
    sandbox_admin(sandbox, "settings", flags)


def fault(sandbox: Any, **spec: Any) -> None:
    sandbox_admin(sandbox, "faults", spec)


def test_sal21_granted_scopes_narrower_than_asked_are_stored(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    granted = ["launch/patient", "openid", "fhirUser", "patient/Patient.rs", "patient/Observation.rs"]
    settings(sandbox, grant_scope_subset=granted)
    try:
        with running_service(make_settings, sandbox, smart_practice(sandbox, "narrow-app")) as svc:
            register(sandbox, svc, "narrow-app", "public")
            conn_id = connect(sandbox, svc, "narrow-app", pid)
            status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
            assert set(status["granted_scopes"].split()) <= set(granted)
            assert "offline_access" not in status["granted_scopes"]
            events = svc.admin("GET", "/api/integrations/admin/audit").json()
            done = next(e for e in events if e["action"] == "authorize.complete")
            assert done["detail"]["granted_scope"] != done["detail"]["asked_scope"]
    finally:
        settings(sandbox, grant_scope_subset=None)


def test_invalid_grant_at_token_endpoint(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "ig-app")) as svc:
        register(sandbox, svc, "ig-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "ig-app", "patient_id": pid})
        fault(sandbox, kind="oauth_error", path="/oauth/token", error="invalid_grant", times=1)
        r = authorize_headless(svc, svc.base_url + LOGIN)
        assert r.status_code == 502 and r.json()["error"] == "invalid_grant"
        assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        assert any(e["action"] == "authorize.complete" and e["outcome"] == "failure" for e in events)


def test_refresh_refused_marks_needs_reauth_sal25(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "rr-app")) as svc:
        register(sandbox, svc, "rr-app", "public")
        conn_id = connect(sandbox, svc, "rr-app", pid)
        fault(sandbox, kind="oauth_error", path="/oauth/token", error="invalid_grant", times=1)
        r = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert r.status_code == 409 and r.json()["error"] == "needs_reauth"
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["status"] == "needs_reauth"
        health = svc.admin("GET", "/api/integrations/admin/health").json()
        assert health["status"] == "degraded"  # the tenant's own smart server counts too


def test_discovery_failed_for_a_base_without_smart(make_settings, sandbox) -> None:
    base = sandbox.base_url + "/not-fhir"
    practice = {"smartFhir": {"enabled": True, "issuer": base, "fhirBaseUrl": base, "clientId": "x"}}
    with running_service(make_settings, sandbox, practice, SMART_ISSUER_ALLOWLIST=base) as svc:
        r = svc.admin("GET", LOGIN)
        assert r.status_code == 502 and r.json()["error"] == "discovery_failed"


def test_write_gate_missing_scope_and_no_create(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    practice = smart_practice(sandbox, "gate-app", enableWrite=True, enableNoteCreate=True)
    settings(sandbox, grant_scope_subset=["launch/patient", "openid", "fhirUser", "patient/Patient.rs"])
    try:
        with running_service(make_settings, sandbox, practice, SMART_ENABLE_WRITE="true") as svc:
            register(sandbox, svc, "gate-app", "public")
            connect(sandbox, svc, "gate-app", pid)
            r = svc.admin("POST", "/api/integrations/smart/test/note", json={"text": "x"})
            assert r.status_code == 409 and r.json()["reason"] == "missing_scope"
            assert r.json()["code"] == "WRITE_NOT_SUPPORTED"
    finally:
        settings(sandbox, grant_scope_subset=None)


def test_write_gate_no_create_interaction_dwb40(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    practice = smart_practice(sandbox, "nocreate-app", enableWrite=True, enableNoteCreate=True)
    settings(sandbox, write_enabled=False)
    with running_service(make_settings, sandbox, practice, SMART_ENABLE_WRITE="true") as svc:
        register(sandbox, svc, "nocreate-app", "public")
        connect(sandbox, svc, "nocreate-app", pid)
        r = svc.admin("POST", "/api/integrations/smart/test/note", json={"text": "x"})
        assert r.status_code == 409 and r.json()["reason"] == "no_create_interaction"
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        assert any(e["action"] == "data.write" and e["outcome"] == "blocked" for e in events)


def test_a_token_endpoint_that_echoes_the_code_never_gets_it_shown(make_settings, sandbox) -> None:
    """Servers word invalid_grant as "Invalid authorization code: <code>" (Spring's does): the code must not reach
    the caller's body, the patient's error page or the audit log; the rest of the EHR's words still do."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "echo-app")) as svc:
        register(sandbox, svc, "echo-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "echo-app", "patient_id": pid})
        desc = "Invalid authorization code: {code}"
        fault(sandbox, kind="oauth_error", path="/oauth/token", error="invalid_grant", error_description=desc)
        with capture_all_logs() as logs:
            r = authorize_headless(svc, svc.base_url + LOGIN)
        code = svc.seen["code"]
        assert code not in logs.text and "authorize" in logs.text
        assert r.status_code == 502 and r.json()["error"] == "invalid_grant"
        assert code not in r.text and "Invalid authorization code" in r.json()["message"]
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = next(e for e in events if e["action"] == "authorize.complete" and e["outcome"] == "failure")
        assert code not in str(failed) and "Invalid authorization code" in str(failed)

        sandbox_admin(sandbox, "preapprove", {"client_id": "echo-app", "patient_id": pid})
        fault(sandbox, kind="oauth_error", path="/oauth/token", error="invalid_grant", error_description=desc)
        page = authorize_headless(svc, svc.base_url + LOGIN, headers={"Accept": "text/html"})
        assert page.status_code == 502 and "text/html" in page.headers["content-type"]
        assert svc.seen["code"] not in page.text and "Invalid authorization code" in page.text
