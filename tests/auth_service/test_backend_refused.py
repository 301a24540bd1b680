"""Creating a SMART Backend Services connection (``POST /api/integrations/admin/backend-connections``) that the EHR's
token endpoint refuses, over real sockets (the sandbox as EHR, a live auth service).

A refusal (an OAuth error answer: ``invalid_client``, ``unauthorized_client``, ``invalid_scope``, ``invalid_grant``)
means the operator's registration, client id, key/JWKS or scopes are wrong: ``409 client_grant_refused`` naming the
EHR's code and what to check, never a token or secret, and nothing stored. The EHR failing (5xx) stays
``503 ehr_unavailable``, and eCW's call budget busy stays ``503 ehr_unavailable``, now with ``Retry-After``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from store.models import Connection
from store.rate_windows import RateSlot
from tests.auth_service.ehr import running_service, sandbox_admin, smart_practice
from tests.auth_service.test_admin_refresh import _ecw_backend, _ecw_practice
from tests.auth_service.test_backend_keys import BACKEND, _create_backend
from tests.auth_service.test_call_budget import _saturate
from tests.auth_service.test_flows_sandbox import register

SCOPE = "system/Patient.rs"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # the session's sandbox keeps registered clients


def _stored(svc: Any) -> int:
    with svc.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Connection)) or 0)


def _create_events(svc: Any) -> list[dict[str, Any]]:
    events = svc.admin("GET", "/api/integrations/admin/audit").json()
    return [e for e in events if e["action"] == "backend.create"]


@pytest.mark.parametrize("refusal", ["invalid_client", "unauthorized_client", "invalid_scope", "invalid_grant"])
def test_a_refused_backend_grant_is_409_client_grant_refused_naming_what_to_check(
    make_settings: Any, sandbox: Any, refusal: str
) -> None:
    client = _unique(f"refused-{refusal}")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        said = "no key with kid 'kid-1' in the registered JWKS <b>x</b>"
        fault = {"kind": "oauth_error", "path": "/oauth/token", "error": refusal, "error_description": said}
        sandbox_admin(sandbox, "faults", fault)
        r = _create_backend(svc, sandbox, client)
        assert (r.status_code, r.json()["error"]) == (409, "client_grant_refused"), r.text
        body = r.json()
        assert body["ehr_error"] == refusal
        assert body["ehr_error_description"] == "no key with kid 'kid-1' in the registered JWKS x"  # sanitized
        message = body["message"]
        assert f"refused the client_credentials grant ({refusal}: no key with kid" in message, message
        assert f"client id {client!r}" in message and f"{svc.base_url}/api/integrations/ehr/jwks" in message
        assert SCOPE in message and "no connection was stored" in message
        assert _stored(svc) == 0
        assert svc.admin("GET", "/api/integrations/smart/status").json()["error"] == "not_connected"
        [event] = _create_events(svc)
        assert event["outcome"] == "failure"
        assert (event["detail"]["error_code"], event["detail"]["ehr_error"]) == ("client_grant_refused", refusal)
        # the registration fixed (the fault fired once): the same request creates the connection
        created = svc.admin("POST", BACKEND, json={"provider": "smart", "scope": SCOPE})
        assert created.status_code == 201, created.text


def test_a_wrong_client_secret_is_409_and_the_answer_names_no_secret(make_settings: Any, sandbox: Any) -> None:
    """client_secret_basic: the EHR refuses the authentication (``invalid_client``); the operator is told to check
    the client secret, and neither the configured nor the registered secret appears anywhere in the answer."""
    client = _unique("backend-secret")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "confidential-symmetric", client_secret="registered-secret-4711")
        put = svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "typo-secret-0815"})
        assert put.status_code == 200, put.text
        r = svc.admin("POST", BACKEND, json={"provider": "smart", "scope": SCOPE})
        assert (r.status_code, r.json()["error"]) == (409, "client_grant_refused"), r.text
        assert r.json()["ehr_error"] == "invalid_client"
        assert "its client secret" in r.json()["message"]
        assert "typo-secret-0815" not in r.text and "registered-secret-4711" not in r.text
        assert _stored(svc) == 0


def test_an_ehr_failing_is_still_503_while_a_refusal_is_409(make_settings: Any, sandbox: Any) -> None:
    """A token endpoint answering 503 (after the retries a person can wait for) is an outage: ``503
    ehr_unavailable``, nothing stored; the same request refused by the EHR is the operator's to fix: 409."""
    client = _unique("backend-outage")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/oauth/token", "times": None})
        r = _create_backend(svc, sandbox, client)
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert _stored(svc) == 0
        sandbox_admin(sandbox, "faults", method="DELETE")
        sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_client"})
        refused = svc.admin("POST", BACKEND, json={"provider": "smart", "scope": SCOPE})
        assert (refused.status_code, refused.json()["error"]) == (409, "client_grant_refused"), refused.text
        assert _stored(svc) == 0
        codes = [e["detail"]["error_code"] for e in _create_events(svc)]
        assert sorted(codes) == ["client_grant_refused", "ehr_unavailable"]


def test_a_busy_ecw_call_budget_at_creation_is_503_with_retry_after(make_settings: Any, sandbox: Any) -> None:
    """eCW's budget busy (every call of the practice base taken by syncs): nothing is sent, nothing stored, and the
    answer says when to come back (``Retry-After`` and ``retryAfterSeconds``), as a throttle should."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    client = _unique("ecw-busy")
    overrides = {"SMART_ISSUER_ALLOWLIST": base, "EHR_CALL_BUDGET_WAIT_SECONDS": 0.5}
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **overrides) as svc:
        with svc.ctx.db.session() as session, session.begin():
            session.query(RateSlot).delete()
        _saturate(svc, base)
        r = _ecw_backend(svc, sandbox, client, base)
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert "no free call" in r.json()["message"]
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["retryAfterSeconds"] == int(r.headers["Retry-After"])
        assert _stored(svc) == 0
