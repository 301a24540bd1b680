"""An admin's ``POST /api/integrations/smart/refresh`` that did not refresh says so, over real sockets (the sandbox as
EHR, a live auth service): never ``200`` with the old expiry, which reads as "refreshed".

- eClinicalWorks' call budget (vendors.md §4: every caller and the token endpoint counted) busy: the refresh spends
  that budget like the code exchange and the backend mint do, sends nothing, and answers ``503 ehr_unavailable``
  with ``Retry-After`` and the expiry of the token that was kept;
- the token endpoint failing transiently (503 after the vault's retries): ``503 ehr_unavailable``, the token kept;
- a ``client_rejected`` backend connection retried while the EHR fails: it stays ``client_rejected`` (a kept token
  proves nothing about the client), not ``active``;
- a patient connection the EHR gave no refresh token: ``409 no_refresh_token``, the token's expiry named."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import httpx

from connectors.smart import discover
from store.rate_windows import RateSlot
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_backend_keys import BACKEND, _create_backend
from tests.auth_service.test_call_budget import _saturate
from tests.auth_service.test_flows_sandbox import connect, register

REFRESH = "/api/integrations/smart/refresh"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # the session's sandbox keeps registered clients


def _token(svc: Any, conn_id: str) -> dict[str, Any]:
    status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
    return {"status": status["status"], **status["token"]}


def _refresh_events(svc: Any, conn_id: str) -> list[dict[str, Any]]:
    events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": conn_id}).json()
    return [e for e in events if e["action"] == "token.refresh"]


def _ecw_backend(svc: Any, sandbox: Any, client_id: str, base: str) -> httpx.Response:
    """A backend connection of eClinicalWorks (RS384 private_key_jwt, the service key), its practice base served by
    the sandbox through the discovery cache (the sandbox serves FHIR at ``/fhir`` only)."""
    register(
        sandbox,
        svc,
        client_id,
        "backend",
        jwks_url=f"{svc.base_url}/api/integrations/ehr/jwks",
        allowed_scopes="system/*.rs",
    )
    smart = discover(sandbox.fhir_base, http=svc.ctx.http)
    svc.ctx.discovery.put(dataclasses.replace(smart, fhir_base=base, issuer=base))
    response: httpx.Response = svc.admin("POST", BACKEND, json={"provider": "ecw", "scope": "system/Patient.rs"})
    return response


def _ecw_practice(sandbox: Any, client_id: str, kid: str) -> dict[str, Any]:
    config = {"fhirBaseUrl": sandbox.base_url, "clientId": client_id, "practiceCode": "ABCD12", "kid": kid}
    return {"ehrIntegrations": {"enabledProviders": ["ecw"], "providerConfigs": {"ecw": config}}}


def test_refresh_with_the_ecw_call_budget_busy_answers_503_retry_after_not_200(
    make_settings: Any, sandbox: Any
) -> None:
    """The admin's refresh of an eCW connection spends eCW's shared budget; busy, nothing is sent and the answer is
    ``503 ehr_unavailable`` with ``Retry-After``, naming the busy budget and until when the kept token is valid.
    Once calls are free the same refresh mints a new token (200, a new expiry)."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    client = _unique("ecw-bulk")
    overrides = {"SMART_ISSUER_ALLOWLIST": base, "EHR_CALL_BUDGET_WAIT_SECONDS": 0.5}
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **overrides) as svc:
        created = _ecw_backend(svc, sandbox, client, base)
        assert created.status_code == 201, created.text
        conn_id = created.json()["connection_id"]
        before = _token(svc, conn_id)
        with svc.ctx.db.session() as session, session.begin():
            session.query(RateSlot).delete()  # the creation's calls: the syncs below take every call instead
        _saturate(svc, base)
        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["retryAfterSeconds"] == int(r.headers["Retry-After"])
        message = r.json()["message"]
        assert "refresh was not done" in message and "no free call" in message and "nothing was sent" in message
        assert f"stays valid until {before['expires_at']}" in message, message
        assert r.json()["token_expires_at"] == before["expires_at"]
        assert _token(svc, conn_id) == before  # the kept token, the connection active
        outcomes = [(e["outcome"], e["detail"].get("error_code")) for e in _refresh_events(svc, conn_id)]
        assert ("transient_failure", "call_budget_busy") in outcomes  # the vault's row: nothing was sent
        assert ("failure", "ehr_unavailable") in outcomes  # the admin's refresh
        with svc.ctx.db.session() as session, session.begin():
            session.query(RateSlot).delete()  # the syncs are done: calls free again
        again = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert again.status_code == 200, again.text
        minted = [e for e in _refresh_events(svc, conn_id) if e["outcome"] == "success" and "version" in e["detail"]]
        assert len(minted) == 1  # the vault stored a new token (a version) only now; creation saved the first


def test_refresh_while_the_token_endpoint_fails_answers_503_not_the_old_expiry(
    make_settings: Any, sandbox: Any
) -> None:
    """The token endpoint answers 503 to every attempt of the vault's retries: the still-valid token is kept (as a
    sync would) but the admin is told the refresh was not done: ``503 ehr_unavailable``, the kept token's expiry."""
    client = _unique("refresh-503")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        conn_id = _create_backend(svc, sandbox, client).json()["connection_id"]
        before = _token(svc, conn_id)
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/oauth/token", "times": None})
        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert "refresh was not done" in r.json()["message"]
        assert f"stays valid until {before['expires_at']}" in r.json()["message"]
        assert r.json()["token_expires_at"] == before["expires_at"]
        assert _token(svc, conn_id) == before


def test_retrying_a_client_rejected_connection_while_the_ehr_fails_keeps_it_client_rejected(
    make_settings: Any, sandbox: Any
) -> None:
    """The admin retries a ``client_rejected`` backend connection (its last token not yet expired) while the token
    endpoint fails transiently: no new token proves the client is accepted again, so the connection stays
    ``client_rejected`` and the answer is 503, not 200 and ``active``."""
    client = _unique("rejected-then-503")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        conn_id = _create_backend(svc, sandbox, client).json()["connection_id"]
        sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_client"})
        rejected = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (rejected.status_code, rejected.json()["error"]) == (409, "client_rejected"), rejected.text
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/oauth/token", "times": None})
        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert _token(svc, conn_id)["status"] == "client_rejected"
        sandbox_admin(sandbox, "faults", method="DELETE")
        retried = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _token(svc, conn_id)["status"] == "active"


def test_refresh_of_a_connection_without_refresh_token_answers_409_no_refresh_token(
    make_settings: Any, sandbox: Any
) -> None:
    """The EHR granted neither ``offline_access`` nor ``online_access``: there is nothing to refresh with. The admin
    is told so (``409 no_refresh_token``, the access token's expiry), not 200 with the old expiry."""
    client = _unique("no-refresh")
    pid = patient_ids(sandbox)[0]
    scopes = "openid fhirUser launch/patient patient/*.rs"  # no offline_access (nor online_access)
    with running_service(make_settings, sandbox, smart_practice(sandbox, client), SMART_DEFAULT_SCOPES=scopes) as svc:
        register(sandbox, svc, client, "public")
        conn_id = connect(sandbox, svc, client, pid)
        before = _token(svc, conn_id)
        assert before["has_refresh_token"] is False
        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (409, "no_refresh_token"), r.text
        assert f"valid until {before['expires_at']}" in r.json()["message"]
        assert r.json()["token_expires_at"] == before["expires_at"]
        assert _token(svc, conn_id) == before
        failed = [e for e in _refresh_events(svc, conn_id) if e["outcome"] == "failure"]
        assert [e["detail"]["error_code"] for e in failed] == ["no_refresh_token"]
