"""Connection states an admin must act on, over real sockets (the sandbox and a live auth service):

- a backend connection whose fresh client_credentials token is refused (401) again after one re-acquisition is
  ``client_rejected`` ("check the client registration"), never ``needs_reauth`` ("send the patient a link");
- a stored token that fails to decrypt answers ``token_undecryptable`` and the connection shows that status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from auth_service.store.errors import ClientRejectedError
from auth_service.store.models import TokenRecord
from connectors.errors import FhirUnauthorizedError
from connectors.fhir import FhirClient
from pipelines.resources import AppDatabaseResource
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_backend_keys import _create_backend
from tests.auth_service.test_flows_sandbox import connect, register

READ = "/api/integrations/smart/test/patient"


def _status(svc: Any, conn_id: str) -> str:
    return str(svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()["status"])


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
                ct = rows[second].access_token_ct
                assert ct is not None
                rows[second].access_token_ct = ct[:-6] + ("AAAAAA" if not ct.endswith("AAAAAA") else "BBBBBB")
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
        with svc.ctx.db.session() as session, session.begin():
            row = session.get(TokenRecord, conn_id)
            assert row is not None
            row.access_token_ct = "v1.0000dead.AAAA"  # a key id nobody has any more
        r = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert (r.status_code, r.json()["error"]) == (409, "token_undecryptable"), r.text
        assert _status(svc, conn_id) == "token_undecryptable"
        retried = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert retried.status_code == 200, retried.text
        assert _status(svc, conn_id) == "active"
        assert svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid}).status_code == 200
