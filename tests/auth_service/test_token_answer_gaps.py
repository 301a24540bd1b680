"""Token answers real servers give that the sandbox's defaults do not (SAL-15, SAL-33), over real sockets: no
``patient``, no ``scope``, no ``expires_in``; and an answer refused after the code exchange, whose tokens must not
stay valid at the EHR (``auth_service.services.grant_checks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_flows_sandbox import connect, register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
HTML = {"Accept": "text/html"}


def _tokens_of(sandbox: Any, client_id: str) -> list[tuple[str, bool]]:
    """(kind, revoked) of every token the sandbox issued to ``client_id``."""
    return [(rec.kind, rec.revoked) for rec in sandbox.state.auth.tokens.values() if rec.client_id == client_id]


def test_sal15_an_answer_without_patient_scope_or_expires_in_binds_the_signed_in_patient(
    make_settings, sandbox
) -> None:
    """No ``patient``: the verified id_token's fhirUser (Patient/<id> on this server) is the patient; no ``scope``:
    granted as asked (RFC 6749 §5.1); no ``expires_in``: 300 s."""
    pid = patient_ids(sandbox)[2]
    sandbox_admin(sandbox, "settings", {"token_response_omit": ["patient", "scope", "expires_in"]})
    with running_service(make_settings, sandbox, smart_practice(sandbox, "np-app")) as svc:
        register(sandbox, svc, "np-app", "public")
        conn_id = connect(sandbox, svc, "np-app", pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["patient"] == pid, status  # before the fix: None, and every sync failed "no patient"
        assert status["fhir_user"].endswith(f"/Patient/{pid}")
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        done = next(e for e in events if e["action"] == "authorize.complete")
        assert status["granted_scopes"] == done["detail"]["asked_scope"]
        token = status["token"]
        lifetime = datetime.fromisoformat(token["expires_at"]) - datetime.fromisoformat(token["issued_at"])
        assert lifetime.total_seconds() == 300
        read = svc.admin("GET", "/api/integrations/smart/test/patient", params={"connection_id": conn_id})
        assert read.status_code == 200 and read.json()["id"] == pid


def test_sal15_an_answer_naming_no_patient_is_refused_clearly_and_its_tokens_revoked(make_settings, sandbox) -> None:
    """No ``patient`` and no id_token to name the signed-in patient: not stored "connected" (it could never sync);
    the patient's page says what happened; the tokens the exchange got are revoked at the EHR."""
    pid = patient_ids(sandbox)[2]
    sandbox_admin(sandbox, "settings", {"token_response_omit": ["patient", "id_token"]})
    with (
        capture_all_logs() as logs,
        running_service(make_settings, sandbox, smart_practice(sandbox, "np2-app")) as svc,
    ):
        register(sandbox, svc, "np2-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "np2-app", "patient_id": pid})
        page = authorize_headless(svc, svc.base_url + LOGIN, headers=HTML)
        assert page.status_code == 502, page.text
        assert "did not say whose record to share" in page.text and "no_patient_context" in page.text
        assert svc.seen["code"] not in page.text
        assert svc.admin("GET", "/api/integrations/smart/status").status_code == 404  # no connection kept
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = next(e for e in events if e["action"] == "authorize.complete")
        assert failed["outcome"] == "failure" and failed["detail"]["error_code"] == "no_patient_context"
    issued = _tokens_of(sandbox, "np2-app")
    assert {kind for kind, _ in issued} == {"access", "refresh"}
    assert all(revoked for _, revoked in issued), issued
    for name, secret in svc.seen.items():
        assert secret not in logs.text, f"{name} leaked into the logs"


def test_sal33_a_refused_id_token_revokes_the_tokens_the_exchange_got(make_settings, sandbox) -> None:
    """An id_token that fails verification (here its ``aud``) refuses the sign-in, and the access and refresh
    tokens the EHR issued with it are revoked there, not left valid for as long as the refresh token lives."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "idt-app")) as svc:
        register(sandbox, svc, "idt-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "idt-app", "patient_id": pid})
        sandbox_admin(sandbox, "faults", {"kind": "id_token", "path": "/oauth/token", "error": "wrong_aud"})
        r = authorize_headless(svc, svc.base_url + LOGIN)
        assert r.status_code == 502 and r.json()["error"] == "invalid_id_token"
    issued = _tokens_of(sandbox, "idt-app")
    assert {kind for kind, _ in issued} == {"access", "refresh"}
    assert all(revoked for _, revoked in issued), issued


def test_sal15_a_clinicians_ehr_launch_with_no_patient_in_context_is_kept(make_settings, sandbox) -> None:
    """An EHR launch asks only ``launch``: a clinician opening the app outside a chart (a schedule) gets no patient,
    as the spec allows. Their verified fhirUser is a Practitioner: the connection is kept without a patient as before
    8651350 (its notes name their patient, persona ``user``; a REST sync says it has none), not refused
    ``no_patient_context`` with a page telling a patient to pick their record, and its tokens are not revoked."""
    scopes = "openid fhirUser offline_access user/Patient.rs user/DocumentReference.rs"
    with running_service(make_settings, sandbox, smart_practice(sandbox, "clin-app")) as svc:
        register(sandbox, svc, "clin-app", "public")
        put = svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"scopes": scopes})
        assert put.status_code == 200, put.text
        launch = sandbox_admin(sandbox, "launch", {})["launch"]  # no patient in context
        start = f"{svc.base_url}/api/integrations/smart/launch?iss={sandbox.fhir_base}&launch={launch}"
        conn_id = connect(sandbox, svc, "clin-app", patient_ids(sandbox)[0], start)  # before: 502 no_patient_context
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["patient"] is None and status["status"] == "active", status
        assert status["fhir_user"].endswith("/Practitioner/prac0"), status
        assert status["sync_blocked"] == "no_patient", status  # never synced, by design: the status says so
        # a sync of it is refused before anything reaches Dagster: no failed run, no failure streak
        sync = svc.admin("POST", "/api/ehr/sync", json={"connectionId": conn_id})
        assert sync.status_code == 409, sync.text
        body = sync.json()
        assert body["error"] == "connection_not_syncable" and body["reason"] == "no_patient", body
        assert "has no patient" in body["message"], body
    assert not any(revoked for _, revoked in _tokens_of(sandbox, "clin-app"))


def test_sal33_an_ehr_without_an_openid_configuration_verifies_the_id_token_with_its_smart_jwks_uri(
    make_settings, sandbox
) -> None:
    """The EHR publishes its keys' URL only in its smart-configuration (SMART 2 ``jwks_uri``), its OpenID
    configuration answers 404: the sign-in that grants ``openid`` connects, the id_token verified with those keys.
    Before, every such sign-in failed ``discovery_failed``."""
    pid = patient_ids(sandbox)[3]
    sandbox_admin(sandbox, "settings", {"openid_configuration": False})
    with running_service(make_settings, sandbox, smart_practice(sandbox, "no-oidc-app")) as svc:
        register(sandbox, svc, "no-oidc-app", "public")
        conn_id = connect(sandbox, svc, "no-oidc-app", pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["patient"] == pid and status["fhir_user"].endswith(f"/Patient/{pid}")
