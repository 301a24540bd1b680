"""Connection states an admin must act on, over real sockets (the sandbox and a live auth service):

- a backend connection whose fresh client_credentials token is refused (401) again after one re-acquisition is
  ``client_rejected`` ("check the client registration"), never ``needs_reauth`` ("send the patient a link");
- a stored token that fails authentication under a configured key answers ``token_undecryptable`` and the
  connection shows that status until its token opens again (row restored) or it is connected again;
- a token sealed under a key id the process lacks (one worker without INTEGRATIONS_TOKEN_ENC_KEYS_OLD) answers
  ``token_undecryptable`` naming the key id, and leaves the connection active for the correctly configured ones."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import FhirUnauthorizedError
from connectors.fhir import FhirClient
from pipelines.resources import AppDatabaseResource
from store import TokenCipher, TokenVault
from store.errors import ClientRejectedError, TokenKeyMissingError
from store.models import Connection, ConnectionStatus, TokenRecord
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_backend_keys import _create_backend
from tests.auth_service.test_flows_sandbox import connect, register

READ = "/api/integrations/smart/test/patient"


def _status(svc: Any, conn_id: str) -> str:
    return str(svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()["status"])


def _tampered(ct: str | None) -> str:
    """The same envelope (same, configured key id) with its last bytes altered: fails authentication."""
    assert ct is not None
    return ct[:-6] + ("AAAAAA" if not ct.endswith("AAAAAA") else "BBBBBB")


def _set_access_ct(svc: Any, conn_id: str, value: str | None = None) -> str:
    """Overwrite the stored access token ciphertext of a connection (``None``: alter it); returns the previous."""
    with svc.ctx.db.session() as session, session.begin():
        row = session.get(TokenRecord, conn_id)
        assert row is not None
        previous: str = row.access_token_ct
        row.access_token_ct = _tampered(previous) if value is None else value
    return previous


def _decrypt_events(svc: Any, conn_id: str) -> list[dict[str, Any]]:
    events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": conn_id}).json()
    return [e for e in events if e["action"] == "token.decrypt"]


def _refresh_events(svc: Any, conn_id: str) -> list[dict[str, Any]]:
    events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": conn_id}).json()
    return [e for e in events if e["action"] == "token.refresh"]


def test_backend_401_after_reacquire_is_client_rejected(make_settings: Any, sandbox: Any) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "rejected-app")) as svc:
        conn_id = _create_backend(svc, sandbox, "rejected-app").json()["connection_id"]
        # the EHR now refuses every token of this client (registration revoked, scopes changed, ...)
        sandbox_admin(sandbox, "faults", {"kind": "expired_token", "path": "/fhir/Patient", "times": None})
        r = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert (r.status_code, r.json()["error"]) == (409, "client_rejected"), r.text
        assert "client registration" in r.json()["message"]
        assert _status(svc, conn_id) == "client_rejected"
        assert svc.admin("GET", "/api/integrations/admin/health").json()["status"] == "degraded"
        events = _refresh_events(svc, conn_id)
        reacquired = [e for e in events if e["outcome"] == "success" and e["detail"].get("after_unauthorized")]
        assert len(reacquired) == 1  # re-acquired exactly once
        assert any(e["outcome"] == "client_rejected" for e in events)
        again = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert again.json()["error"] == "client_rejected"  # no more token calls: the state answers
        assert len(_refresh_events(svc, conn_id)) == len(events)
        # the admin fixes the registration and retries: a new mint, active again
        sandbox_admin(sandbox, "faults", method="DELETE")
        retried = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _status(svc, conn_id) == "active"
        assert svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid}).status_code == 200


@pytest.mark.parametrize("refusal", ["unauthorized_client", "invalid_client", "invalid_grant"])
def test_backend_grant_refused_for_good_is_client_rejected_until_retried_sal32_sal36(
    make_settings: Any, sandbox: Any, refusal: str
) -> None:
    """SAL-32 (a backend connection mints with client_credentials) and SAL-36's error table (smart-app-launch.md
    §8: a token ``invalid_client`` is a credentials/JWKS problem: stop and alert; RFC 6749 §5.2
    ``unauthorized_client``: the client may not use this grant; ``invalid_grant``, Epic's answer to a bad or expired
    client assertion or an unknown key): the admin's refresh is answered 409 ``client_rejected`` naming the refusal,
    never ``needs_reauth`` (a backend connection has no patient to send a link to), the connection shows
    ``client_rejected`` (tenant health degraded, counted under that state), a read sends no token request, and once
    the registration is fixed the same refresh makes it active again."""
    pid = patient_ids(sandbox)[0]
    client = f"grant-refused-{refusal}"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        conn_id = _create_backend(svc, sandbox, client).json()["connection_id"]
        sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": refusal})
        r = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (409, "client_rejected"), r.text
        assert f"refused the client_credentials grant ({refusal}" in r.json()["message"]
        assert "check the client registration" in r.json()["message"]
        assert _status(svc, conn_id) == "client_rejected"
        health = svc.admin("GET", "/api/integrations/admin/health").json()
        assert health["status"] == "degraded"
        [smart] = [p for p in health["providers"] if p["provider"] == "smart"]
        assert smart["connections"] == {"client_rejected": 1}, health
        marked = [e for e in _refresh_events(svc, conn_id) if e["outcome"] == "client_rejected"]
        assert [e["detail"]["error_code"] for e in marked] == [refusal]
        assert not [e for e in _refresh_events(svc, conn_id) if e["outcome"] == "needs_reauth"]
        events = len(_refresh_events(svc, conn_id))
        again = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert again.json()["error"] == "client_rejected"  # the state answers: no token request
        said = again.json()["message"]  # why, and how to retry (before: only "connection is client_rejected")
        assert f"is client_rejected: its token endpoint refused the client_credentials grant ({refusal}); " in said
        assert "POST /api/integrations/smart/refresh" in said
        assert "POST /api/integrations/admin/providers/smart/reactivate" in said
        assert len(_refresh_events(svc, conn_id)) == events
        # the fault fired once: the registration is fixed; the admin retries
        retried = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _status(svc, conn_id) == "active"
        assert svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid}).status_code == 200


def test_a_backend_connection_left_needs_reauth_by_an_earlier_version_is_retried_by_the_admin(
    make_settings: Any, sandbox: Any
) -> None:
    """Earlier versions sent a backend connection whose grant was refused with ``invalid_grant`` to ``needs_reauth``,
    which no patient can leave (there is none): the admin's refresh mints again and makes it active once it works,
    as for ``client_rejected``; refused again, it is ``client_rejected`` now."""
    client = "left-needs-reauth"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        conn_id = _create_backend(svc, sandbox, client).json()["connection_id"]
        with svc.ctx.db.session() as session, session.begin():
            conn = session.get(Connection, conn_id)
            assert conn is not None
            conn.status = ConnectionStatus.NEEDS_REAUTH  # what the earlier version stored
        sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_grant"})
        refused = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert (refused.status_code, refused.json()["error"]) == (409, "client_rejected"), refused.text
        assert _status(svc, conn_id) == "client_rejected"
        retried = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _status(svc, conn_id) == "active"


def test_pipelines_token_source_stops_with_client_rejected(
    make_settings: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's path: FhirClient over the vault's token source, one request after another."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "rejected-pipe")) as svc:
        conn_id = _create_backend(svc, sandbox, "rejected-pipe").json()["connection_id"]
        sandbox_admin(sandbox, "faults", {"kind": "expired_token", "path": "/fhir/Patient", "times": None})
        settings = svc.ctx.settings
        monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value())
        monkeypatch.setenv("EHR_JWT_PRIVATE_KEY", settings.signing_key_pem())
        resource = AppDatabaseResource(url=settings.DATABASE_URL)
        with resource.open() as db, httpx.Client(timeout=10) as http:
            client = FhirClient(sandbox.fhir_base, resource.vault(db, http).token_source(conn_id), http=http)
            with pytest.raises(FhirUnauthorizedError):
                client.read("Patient", pid)  # 401, one re-acquisition, 401 again
            with pytest.raises(ClientRejectedError):
                client.read("Patient", pid)  # the re-acquired token is refused too: stop, check registration
        assert _status(svc, conn_id) == "client_rejected"


def test_healthy_backend_401_is_reacquired_and_stays_active(make_settings: Any, sandbox: Any) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "once-app")) as svc:
        conn_id = _create_backend(svc, sandbox, "once-app").json()["connection_id"]
        sandbox_admin(sandbox, "faults", {"kind": "expired_token", "path": "/fhir/Patient", "times": 1})
        r = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert r.status_code == 200, r.text
        assert _status(svc, conn_id) == "active"


@pytest.mark.parametrize("how", ["moved", "tampered"])
def test_undecryptable_token_is_a_distinct_code_and_visible_state(make_settings: Any, sandbox: Any, how: str) -> None:
    pids = patient_ids(sandbox)
    with running_service(make_settings, sandbox, smart_practice(sandbox, f"crypt-{how}")) as svc:
        register(sandbox, svc, f"crypt-{how}", "public")
        first = connect(sandbox, svc, f"crypt-{how}", pids[0])
        second = connect(sandbox, svc, f"crypt-{how}", pids[1])
        with svc.ctx.db.session() as session, session.begin():
            rows = {r.connection_id: r for r in session.scalars(select(TokenRecord))}
            if how == "moved":  # another row's ciphertext: AAD-bound, must not open here
                rows[second].access_token_ct = rows[first].access_token_ct
            else:
                rows[second].access_token_ct = _tampered(rows[second].access_token_ct)
        r = svc.admin("GET", READ, params={"connection_id": second})
        assert (r.status_code, r.json()["error"]) == (409, "token_undecryptable"), r.text
        assert _status(svc, second) == "token_undecryptable"
        assert _status(svc, first) == "active"
        events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": second}).json()
        assert any(e["action"] == "token.decrypt" and e["outcome"] == "failure" for e in events)
        refresh = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": second})
        assert refresh.json()["error"] == "token_undecryptable"
        # disconnecting still works (local deletion), so the patient can connect again
        gone = svc.admin("POST", "/api/integrations/smart/disconnect", json={"connection_id": second})
        assert gone.status_code == 200, gone.text


def test_undecryptable_backend_token_is_reminted_when_the_admin_retries(make_settings: Any, sandbox: Any) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "crypt-backend")) as svc:
        conn_id = _create_backend(svc, sandbox, "crypt-backend").json()["connection_id"]
        _set_access_ct(svc, conn_id)  # altered under the configured key
        r = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert (r.status_code, r.json()["error"]) == (409, "token_undecryptable"), r.text
        assert _status(svc, conn_id) == "token_undecryptable"
        retried = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _status(svc, conn_id) == "active"
        assert svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid}).status_code == 200


@pytest.mark.parametrize("via", ["read", "admin_refresh"])
def test_restored_ciphertext_makes_the_connection_active_again(make_settings: Any, sandbox: Any, via: str) -> None:
    """issue 10: token_undecryptable is re-checked: once the row is restored from a backup the stored token opens
    again and the patient connection is active again by itself (no reconnect; its refresh token still works)."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, f"restore-{via}")) as svc:
        register(sandbox, svc, f"restore-{via}", "public")
        conn_id = connect(sandbox, svc, f"restore-{via}", pid)
        original = _set_access_ct(svc, conn_id)
        r = svc.admin("GET", READ, params={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (409, "token_undecryptable"), r.text
        assert _status(svc, conn_id) == "token_undecryptable"
        again = svc.admin("GET", READ, params={"connection_id": conn_id})
        assert "restore the row from a backup" in again.json()["message"]  # still altered: still refused
        _set_access_ct(svc, conn_id, original)  # the operator restores the row
        if via == "read":
            assert svc.admin("GET", READ, params={"connection_id": conn_id}).status_code == 200
        else:  # a forced refresh: the refresh token opens again and the sandbox accepts it
            refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
            assert refreshed.status_code == 200, refreshed.text
            assert svc.admin("GET", READ, params={"connection_id": conn_id}).status_code == 200
        assert _status(svc, conn_id) == "active"
        assert [e["outcome"] for e in _decrypt_events(svc, conn_id)].count("recovered") == 1


def test_unknown_key_id_is_this_process_problem_and_leaves_the_connection_active(
    make_settings: Any, sandbox: Any
) -> None:
    """issue 10: a vault without the key a token is sealed under (one worker deployed without
    INTEGRATIONS_TOKEN_ENC_KEYS_OLD) answers token_undecryptable naming the key id, and changes no state: the
    correctly configured service keeps reading and refreshing at the sandbox afterwards."""
    pids = patient_ids(sandbox)
    with running_service(make_settings, sandbox, smart_practice(sandbox, "kid-missing")) as svc:
        register(sandbox, svc, "kid-missing", "public")
        conn_id = connect(sandbox, svc, "kid-missing", pids[0])
        kid = svc.ctx.cipher.active_kid
        misconfigured = TokenVault(svc.ctx.db, TokenCipher(os.urandom(32)))
        try:
            with pytest.raises(TokenKeyMissingError, match="unknown key id") as read_error:
                misconfigured.get_access_token(conn_id)
            assert read_error.value.code == "token_undecryptable"
            assert kid in read_error.value.message and "INTEGRATIONS_TOKEN_ENC_KEYS_OLD" in read_error.value.message
            with pytest.raises(TokenKeyMissingError, match=kid):
                misconfigured.force_refresh(conn_id)
        finally:
            misconfigured.close()
        assert _status(svc, conn_id) == "active"
        assert _decrypt_events(svc, conn_id) == []
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text  # the refresh token still works at the EHR
        assert svc.admin("GET", READ, params={"connection_id": conn_id}).status_code == 200
        assert _status(svc, conn_id) == "active"

        # the same through the service itself: a row sealed under a key id it lacks
        original = _set_access_ct(svc, conn_id, "v1.0000dead.AAAA")
        r = svc.admin("GET", READ, params={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (409, "token_undecryptable"), r.text
        assert "'0000dead'" in r.json()["message"] and "INTEGRATIONS_TOKEN_ENC_KEYS_OLD" in r.json()["message"]
        assert _status(svc, conn_id) == "active"
        assert svc.admin("GET", "/api/integrations/admin/health").json()["status"] == "ok"
        _set_access_ct(svc, conn_id, original)
        assert svc.admin("GET", READ, params={"connection_id": conn_id}).status_code == 200
