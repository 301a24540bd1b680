"""A patient connection whose refresh the EHR refuses with ``invalid_client`` (its client secret rotated at the EHR),
over real sockets (the sandbox as EHR, a live auth service).

RFC 6749 §5.2: ``invalid_client`` is the client's authentication failing, the app's credentials, not the patient's
grant. The connection is ``client_rejected`` (the admin answer 409 ``client_rejected`` saying what to check, as does
the admin's test read of it, without a request; the tenant health degraded), never ``needs_reauth``; its refresh
token is kept; nothing more is sent to the EHR until the admin retries; the retry refreshes with the kept token and
makes it active only once the EHR accepts the client again.
The patient's status page says the practice must fix it, not that the patient must sign in again."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx

from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from tests.auth_service.ehr import patient_ids, running_service, smart_practice
from tests.auth_service.test_admin_call_budget import _sent_paths
from tests.auth_service.test_flows_sandbox import connect, register

REFRESH = "/api/integrations/smart/refresh"
READ = "/api/integrations/smart/test/patient"
PROVIDER = "/api/integrations/admin/providers/smart"


def _status(svc: Any, conn_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = svc.admin(
        "GET", "/api/integrations/smart/status", params={"connection_id": conn_id}
    ).json()
    return answer


def _refresh_events(svc: Any, conn_id: str) -> list[dict[str, Any]]:
    events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": conn_id}).json()
    return [e for e in events if e["action"] == "token.refresh" and e["outcome"] == "client_rejected"]


def _status_page(svc: Any, conn_id: str) -> httpx.Response:
    """``/connect/done`` as the patient's browser that made the connection sees it (its session cookies)."""
    sid = "s" * 43
    marker = svc.ctx.sessions.sign(conn_id, hashlib.sha256(sid.encode()).hexdigest(), ttl_seconds=600)
    with httpx.Client(base_url=svc.base_url, cookies={SESSION_COOKIE: sid, CONNECTION_COOKIE: marker}) as browser:
        return browser.get("/connect/done")


def test_a_rotated_client_secret_makes_a_patient_connection_client_rejected_until_the_admin_fixes_it(
    make_settings: Any, sandbox: Any
) -> None:
    pid = patient_ids(sandbox)[0]
    client = f"rotated-{uuid.uuid4().hex[:8]}"  # the session's sandbox keeps registered clients
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-1")
        assert svc.admin("PUT", PROVIDER, json={"clientSecret": "secret-1"}).status_code == 200
        conn_id = connect(sandbox, svc, client, pid)
        register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-2")  # rotated at the EHR
        sent = _sent_paths(svc)

        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert (r.status_code, r.json()["error"]) == (409, "client_rejected"), r.text
        message = r.json()["message"]
        assert "refused the client's authentication on the refresh_token grant (invalid_client" in message
        assert "client secret in the provider config" in message and "need not authorize again" in message
        assert "secret-1" not in r.text and "secret-2" not in r.text
        assert sent.count("/oauth/token") == 1  # refused for good: not retried
        status = _status(svc, conn_id)
        assert status["status"] == "client_rejected" and status["token"]["has_refresh_token"]
        assert svc.admin("GET", "/api/integrations/admin/health").json()["status"] == "degraded"
        [event] = _refresh_events(svc, conn_id)
        assert (event["detail"]["reason"], event["detail"]["error_code"]) == ("client_auth_refused", "invalid_client")
        assert "client secret" in event["detail"]["check"] and "secret-1" not in str(event["detail"])

        read = svc.admin("GET", READ, params={"connection_id": conn_id})
        assert (read.status_code, read.json()["error"]) == (409, "client_rejected"), read.text
        said = read.json()["message"]  # why, and how to retry (before: only "connection is client_rejected")
        assert said.startswith(f"connection {conn_id} is client_rejected: its token endpoint refused the client's "), (
            said
        )
        assert "authentication on a refresh (invalid_client); check " in said and "client secret" in said
        assert "POST /api/integrations/smart/refresh" in said and "need not authorize again" in said
        assert "POST /api/integrations/admin/providers/smart/reactivate" in said
        assert "secret-1" not in read.text and "secret-2" not in read.text
        assert sent == ["/oauth/token"]  # the state answers: nothing more sent to the EHR

        page = _status_page(svc, conn_id)
        assert page.status_code == 200, page.text
        text = " ".join(page.text.split())
        assert "must fix its app&#39;s access (nothing for you to do)" in text
        assert "This is for Clinic One to fix, not you: you do not need to sign in again" in text
        assert 'id="disconnect"' in text  # the patient may still withdraw the access they gave

        again = svc.admin("POST", REFRESH, json={"connection_id": conn_id})  # retried before fixing anything
        assert (again.status_code, again.json()["error"]) == (409, "client_rejected"), again.text
        assert _status(svc, conn_id)["status"] == "client_rejected" and len(_refresh_events(svc, conn_id)) == 2

        assert svc.admin("PUT", PROVIDER, json={"clientSecret": "secret-2"}).status_code == 200  # the fix
        fixed = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        assert fixed.status_code == 200, fixed.text  # the kept refresh token was still good
        assert _status(svc, conn_id)["status"] == "active"
        assert svc.admin("GET", READ, params={"connection_id": conn_id}).status_code == 200
        assert "You're connected" in _status_page(svc, conn_id).text
