"""``POST /api/integrations/smart/disconnect`` revokes within eClinicalWorks' shared call budget, and a disconnect
whose revocation was not made says so, over real sockets (the sandbox as EHR, a live auth service).

The disconnect deletes the tokens whatever became of the revocation (the person asked to disconnect; an EHR that is
down does not keep them): a busy call budget behaves like that outage. Nothing is sent outside the budget, and the
answer and the audit rows say plainly that the tokens were deleted here but not revoked at the EHR (``revoked_at_
server`` false, ``revocation``, ``revocation_error``, ``warning``); the log names no token.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from auth_service.api.browser_seal import csrf_token
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from connectors.smart import discover
from store.models import TokenRecord
from store.tokenrows import open_field
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_admin_call_budget import _ecw_connection, _free_calls, _sent_paths, _settings
from tests.auth_service.test_admin_refresh import _ecw_practice, _unique
from tests.auth_service.test_call_budget import _saturate
from tests.auth_service.test_flows_sandbox import connect, register

DISCONNECT = "/api/integrations/smart/disconnect"
AUDIT = "/api/integrations/admin/audit"


def _tokens(svc: Any, conn_id: str) -> list[str]:
    """The connection's stored token values (to prove no log line carries them)."""
    with svc.ctx.db.session() as session:
        row = session.get(TokenRecord, conn_id)
        assert row is not None
        fields = [f for f in ("access_token", "refresh_token") if getattr(row, f"{f}_ct") is not None]
        return [open_field(svc.ctx.cipher, row, f) for f in fields]


def _events(svc: Any, conn_id: str, action: str) -> list[dict[str, Any]]:
    events = svc.admin("GET", AUDIT, params={"connection_id": conn_id}).json()
    return [e for e in events if e["action"] == action]


def _assert_deleted_not_revoked(svc: Any, conn_id: str, r: Any, revocation: str, error_code: str) -> None:
    """200, disconnected, the tokens gone here; the answer and both audit rows say they were not revoked, and why."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["revoked_at_server"], body["revocation"]) == ("disconnected", False, revocation)
    assert body["revocation_error"] == "ehr_unavailable"
    assert "deleted here but NOT revoked at the EHR" in body["warning"]
    assert "stay valid at the EHR until they expire" in body["warning"]
    status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
    assert (status["status"], status["token"]) == ("disconnected", None)
    [event] = _events(svc, conn_id, "connection.disconnect")
    assert event["outcome"] == "local_only"
    assert event["detail"] == {"revoked_at_server": False, "revocation": revocation, "error_code": "ehr_unavailable"}
    [vault_event] = _events(svc, conn_id, "token.revoke")
    assert vault_event["outcome"] == "local_only"
    assert (vault_event["detail"]["revocation"], vault_event["detail"]["error_code"]) == (revocation, error_code)


def test_disconnect_with_the_ecw_call_budget_busy_sends_no_revocation_and_says_the_tokens_were_not_revoked(
    make_settings: Any, sandbox: Any
) -> None:
    """Busy (background syncs took every call): no revocation request is sent outside the budget. As when the EHR is
    down, the tokens are deleted here and the answer says they were not revoked (``not_sent``)."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    client = _unique("ecw-disconnect")
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **_settings(base)) as svc:
        conn_id = _ecw_connection(svc, sandbox, client, base)
        svc.ctx.discovery.put(discover(sandbox.fhir_base, http=svc.ctx.http))  # the revocation itself is what waits
        secrets = _tokens(svc, conn_id)
        sent = _sent_paths(svc)
        _saturate(svc, sandbox.fhir_base)
        with capture_all_logs() as logs:
            r = svc.admin("POST", DISCONNECT, json={"connection_id": conn_id})
        assert not [p for p in sent if p.startswith("/oauth")], sent  # nothing was sent outside the budget
        _assert_deleted_not_revoked(svc, conn_id, r, "not_sent", "call_budget_busy")
        assert "call budget had no free call, so the revocation was not sent" in r.json()["warning"]
        assert all(secret not in logs.text for secret in secrets)
        assert "revocation not_sent (call_budget_busy)" in logs.text


def test_disconnect_with_calls_free_revokes_within_the_ecw_budget(make_settings: Any, sandbox: Any) -> None:
    """The same disconnect with calls free: the revocation is sent (and counted), the answer says it was revoked."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    client = _unique("ecw-disconnect-free")
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **_settings(base)) as svc:
        conn_id = _ecw_connection(svc, sandbox, client, base)
        sent = _sent_paths(svc)
        _free_calls(svc)
        r = svc.admin("POST", DISCONNECT, json={"connection_id": conn_id})
        assert r.status_code == 200, r.text
        assert (r.json()["revoked_at_server"], r.json()["revocation"]) == (True, "revoked")
        assert "warning" not in r.json() and "revocation_error" not in r.json()
        assert "/oauth/revoke" in sent
        [event] = _events(svc, conn_id, "connection.disconnect")
        assert (event["outcome"], event["detail"]["revoked_at_server"]) == ("success", True)


def test_disconnect_while_the_ehr_revocation_fails_deletes_and_says_the_tokens_were_not_revoked(
    make_settings: Any, sandbox: Any
) -> None:
    """The outage the busy budget behaves like: the revocation endpoint answers 503, the tokens are deleted here all
    the same, and the answer and the audit say they were not revoked (``failed``); the log names no token."""
    pid = patient_ids(sandbox)[0]
    client = _unique("revoke-503")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        conn_id = connect(sandbox, svc, client, pid)
        secrets = _tokens(svc, conn_id)
        assert len(secrets) == 2  # an access and a refresh token
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/oauth/revoke", "times": None})
        with capture_all_logs() as logs:
            r = svc.admin("POST", DISCONNECT, json={"connection_id": conn_id})
        _assert_deleted_not_revoked(svc, conn_id, r, "failed", "temporarily_unavailable")
        assert "the EHR did not confirm the revocation (temporarily_unavailable)" in r.json()["warning"]
        assert all(secret not in logs.text and secret not in r.text for secret in secrets)


def test_purge_with_disconnect_revokes_within_the_ecw_budget_too(make_settings: Any, sandbox: Any) -> None:
    """The admin purge's ``disconnect: true`` goes through the same disconnect: busy, nothing is sent."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    client = _unique("ecw-purge")
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **_settings(base)) as svc:
        conn_id = _ecw_connection(svc, sandbox, client, base)
        svc.ctx.discovery.put(discover(sandbox.fhir_base, http=svc.ctx.http))
        sent = _sent_paths(svc)
        _saturate(svc, sandbox.fhir_base)
        r = svc.admin("POST", f"/api/integrations/admin/connections/{conn_id}/purge", json={"disconnect": True})
        assert r.status_code == 200, r.text
        assert not [p for p in sent if p.startswith("/oauth")], sent
        # the purge's answer says it too, as the disconnect's does (before, only the audit row did)
        body = r.json()
        assert (body["status"], body["revoked_at_server"], body["revocation"]) == ("disconnected", False, "not_sent")
        assert body["revocation_error"] == "ehr_unavailable"
        assert "deleted here but NOT revoked at the EHR" in body["warning"]
        [event] = _events(svc, conn_id, "connection.disconnect")
        assert (event["outcome"], event["detail"]["revocation"]) == ("local_only", "not_sent")


def _disconnect_in_the_patients_browser(svc: Any, conn_id: str) -> httpx.Response:
    """The patient's confirmed disconnect (the form on /connect/disconnect, with this browser's session cookies),
    following its redirect to the status page it shows next."""
    sid = "p" * 43
    marker = svc.ctx.sessions.sign(conn_id, hashlib.sha256(sid.encode()).hexdigest(), ttl_seconds=600)
    form = {"connection_id": conn_id, "csrf": csrf_token(svc.ctx, sid), "confirm": "yes"}
    cookies = {SESSION_COOKIE: sid, CONNECTION_COOKIE: marker}
    with httpx.Client(base_url=svc.base_url, cookies=cookies, follow_redirects=True) as browser:
        return browser.post("/connect/disconnect", data=form)


def test_the_patients_status_page_says_when_the_ehr_was_not_told_to_end_the_access(
    make_settings: Any, sandbox: Any
) -> None:
    """A patient who disconnects while the EHR's revocation fails is told so on the page, with what still holds
    (the access ends when it expires) and what to do (remove the app in the patient portal); a revocation that
    worked shows no such note."""
    pids = patient_ids(sandbox)
    client = _unique("revoke-page")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        revoked = connect(sandbox, svc, client, pids[0])
        page = _disconnect_in_the_patients_browser(svc, revoked)
        assert page.status_code == 200 and page.url.path == "/connect/done", page.text
        assert 'id="status"' in page.text and "Disconnected" in page.text
        assert 'id="not-revoked"' not in page.text

        kept = connect(sandbox, svc, client, pids[1])
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/oauth/revoke", "times": None})
        page = _disconnect_in_the_patients_browser(svc, kept)
        assert page.status_code == 200 and page.url.path == "/connect/done", page.text
        text = " ".join(page.text.split())
        assert "Disconnected" in text and 'id="not-revoked"' in text
        # plain words true for every revocation not made (failed, not sent, not offered: never "just now"), and no
        # "it" a reader must resolve: what was cancelled, what still shows, until when, and what to do
        assert "has deleted its access to your records, but could not get" in text
        assert "to cancel that access" in text and "just now" not in text
        assert "may still list the app as connected until the access runs out on its own" in text
        assert "To cancel it now, remove the app in your" in text and "patient portal" in text


def test_a_disconnect_whose_tokens_cannot_be_decrypted_says_the_revocation_was_not_sent_not_that_the_ehr_failed(
    make_settings: Any, sandbox: Any
) -> None:
    """The stored tokens cannot be decrypted here (their ciphertexts swapped: each fails its field's binding), so no
    revocation can be sent: the tokens are deleted as always, and the answer and the audit say the revocation was
    ``not_sent`` because of ``token_undecryptable``, a problem on this side, never that the EHR did not confirm it."""
    pid = patient_ids(sandbox)[0]
    client = _unique("revoke-undecryptable")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        conn_id = connect(sandbox, svc, client, pid)
        with svc.ctx.db.session() as session, session.begin():
            row = session.get(TokenRecord, conn_id)
            assert row is not None and row.refresh_token_ct is not None
            row.access_token_ct, row.refresh_token_ct = row.refresh_token_ct, row.access_token_ct
        sent = _sent_paths(svc)
        r = svc.admin("POST", DISCONNECT, json={"connection_id": conn_id})
        assert r.status_code == 200, r.text
        assert not [p for p in sent if p.startswith("/oauth")], sent  # no revocation request went out
        body = r.json()
        assert (body["status"], body["revoked_at_server"], body["revocation"]) == ("disconnected", False, "not_sent")
        assert body["revocation_error"] == "token_undecryptable"
        assert "NOT revoked at the EHR: the revocation was not sent: a problem on this side" in body["warning"]
        assert "cannot be decrypted" in body["warning"] and "did not confirm" not in body["warning"]
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert (status["status"], status["token"]) == ("disconnected", None)
        [event] = _events(svc, conn_id, "connection.disconnect")
        assert (event["outcome"], event["detail"]) == (
            "local_only",
            {"revoked_at_server": False, "revocation": "not_sent", "error_code": "token_undecryptable"},
        )
        [vault_event] = _events(svc, conn_id, "token.revoke")
        assert (vault_event["detail"]["revocation"], vault_event["detail"]["error_code"]) == (
            "not_sent",
            "token_undecryptable",
        )
