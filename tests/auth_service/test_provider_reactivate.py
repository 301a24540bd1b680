"""An app's client secret rotated at the EHR: one refused refresh pauses all of the app's connections (the admin's
test read of one says why, without a request), and one admin call retries them all once the provider config holds
the new secret, over real sockets (the sandbox as EHR, a live auth service; the sandbox rotates a client's secret when
the client is registered again).

Before: each of the app's connections sent its own failing authentication before it was ``client_rejected``, and the
admin retried them one by one. Now the first refusal marks the app's other active connections ``client_rejected``
(audited ``connection.paused``, naming the refused connection) without a request; ``POST
/api/integrations/admin/providers/{provider}/reactivate`` tries one first (still refused: 409 ``client_rejected``,
one request, nothing changed), else reactivates the rest, at most ``limit`` per call. A connection of another provider
config is never touched."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_admin_call_budget import _sent_paths
from tests.auth_service.test_flows_sandbox import connect, register

REFRESH = "/api/integrations/smart/refresh"
READ = "/api/integrations/smart/test/patient"
REACTIVATE = "/api/integrations/admin/providers/smart/reactivate"
TOKEN = "/oauth/token"


def _status(svc: Any, conn_id: str) -> str:
    answer = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
    return str(answer["status"])


def _events(svc: Any, action: str, conn_id: str | None = None) -> list[dict[str, Any]]:
    params = {"connection_id": conn_id} if conn_id else {}
    events = svc.admin("GET", "/api/integrations/admin/audit", params=params).json()
    return [e for e in events if e["action"] == action]


def _setup(svc: Any, sandbox: Any, client: str) -> tuple[list[str], str]:
    """Three patient connections of the app ``client`` (client_secret_basic, secret-1) and one connection of another
    provider config (``generic``: another app, public) at the same EHR."""
    register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-1")
    assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "secret-1"}).is_success
    app = [connect(sandbox, svc, client, pid) for pid in patient_ids(sandbox)[:3]]
    assert len(set(app)) == 3
    other = f"{client}-other"
    register(sandbox, svc, other, "public")
    generic = {"fhirBaseUrl": sandbox.fhir_base, "clientId": other}
    put = svc.admin("PUT", "/api/integrations/admin/providers/generic", json=generic)
    assert put.status_code == 200, put.text
    assert svc.admin("POST", "/api/integrations/admin/providers/generic/enable").status_code == 200
    login = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=generic"
    return app, connect(sandbox, svc, other, patient_ids(sandbox)[0], start=login)


def _refused_then_fixed(svc: Any, sandbox: Any, client: str) -> list[str]:
    """The app's connections after the EHR rotated its secret (one refusal paused them all) and the admin stored
    the new one; returns the app's connection ids, still ``client_rejected``."""
    app, _ = _setup(svc, sandbox, client)
    register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-2")
    assert svc.admin("POST", REFRESH, json={"connection_id": app[0]}).status_code == 409
    assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "secret-2"}).is_success
    return app


def test_one_refusal_pauses_the_apps_connections_and_one_call_retries_them_all(
    make_settings: Any, sandbox: Any
) -> None:
    client = f"shared-{uuid.uuid4().hex[:8]}"  # the session's sandbox keeps registered clients
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        app, other = _setup(svc, sandbox, client)
        register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-2")  # rotated at the EHR
        sent = _sent_paths(svc)

        r = svc.admin("POST", REFRESH, json={"connection_id": app[0]})
        assert (r.status_code, r.json()["error"]) == (409, "client_rejected"), r.text
        assert sent.count(TOKEN) == 1  # one failed authentication for the whole app
        assert [_status(svc, cid) for cid in app] == ["client_rejected"] * 3
        assert _status(svc, other) == "active"  # another provider config: its own credentials
        for cid in app[1:]:
            [paused] = _events(svc, "connection.paused", cid)
            assert paused["outcome"] == "client_rejected"
            assert paused["detail"]["refused_connection_id"] == app[0] and paused["detail"]["refused_at"]
            assert "secret-1" not in str(paused) and "secret-2" not in str(paused)
            read = svc.admin("GET", READ, params={"connection_id": cid})
            assert (read.status_code, read.json()["error"]) == (409, "client_rejected"), read.text
            said = read.json()[
                "message"
            ]  # why it was paused, and how to retry (before: "connection is client_rejected")
            assert said.startswith(f"connection {cid} is client_rejected: paused without a request: connection "), said
            assert f"{app[0]}, which uses the same client credentials, had its client authentication refused" in said
            assert f"(invalid_client) at {paused['detail']['refused_at']}; check " in said
            assert REACTIVATE in said and REFRESH in said
            assert "secret-1" not in read.text and "secret-2" not in read.text
        assert sent.count(TOKEN) == 1  # their uses send nothing

        early = svc.admin("POST", REACTIVATE)  # before the fix: one try, refused, nothing else tried
        assert (early.status_code, early.json()["error"]) == (409, "client_rejected"), early.text
        body = early.json()
        assert "still refuses the client of provider 'smart'" in body["message"]
        assert "nothing else was tried" in body["message"] and "invalid_client" in body["message"]
        assert body["connection_id"] in app and body["remaining"] == 3
        assert "secret-1" not in early.text and "secret-2" not in early.text
        assert sent.count(TOKEN) == 2  # exactly one more request
        assert [_status(svc, cid) for cid in app] == ["client_rejected"] * 3
        [stopped] = _events(svc, "provider.reactivate")
        assert stopped["outcome"] == "stopped"
        assert stopped["detail"]["stopped_at_connection_id"] == body["connection_id"]

        assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": "secret-2"}).is_success
        first = svc.admin("POST", REACTIVATE, json={"limit": 2})  # bounded: two per call here
        assert first.status_code == 200, first.text
        assert {k: first.json()[k] for k in ("selected", "reactivated", "still_refused", "failed", "remaining")} == {
            "selected": 2,
            "reactivated": 2,
            "still_refused": 0,
            "failed": 0,
            "remaining": 1,
        }
        rest = svc.admin("POST", REACTIVATE).json()
        assert (rest["reactivated"], rest["remaining"], rest["still_refused"], rest["failed"]) == (1, 0, 0, 0)
        assert sorted(first.json()["connections"]["reactivated"] + rest["connections"]["reactivated"]) == sorted(app)
        assert sent.count(TOKEN) == 5  # one refresh each, with its own kept refresh token
        assert [_status(svc, cid) for cid in app] == ["active"] * 3
        for cid in [*app, other]:
            assert svc.admin("GET", READ, params={"connection_id": cid}).status_code == 200
        nothing = svc.admin("POST", REACTIVATE).json()
        assert (nothing["selected"], nothing["remaining"]) == (0, 0) and sent.count(TOKEN) == 5


def test_the_limit_is_bounded(make_settings: Any, sandbox: Any) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "bounded-app")) as svc:
        for limit in (0, 201):
            r = svc.admin("POST", REACTIVATE, json={"limit": limit})
            assert (r.status_code, r.json()["error"]) == (422, "validation_error"), r.text


def test_a_throttled_or_failing_ehr_stops_the_run(make_settings: Any, sandbox: Any) -> None:
    """Once the client is accepted, a retry that fails because the EHR throttles (or is down) stops the run: the
    rest are not_tried instead of each sending one more request to a throttling EHR (or waiting out a timeout)."""
    client = f"throttled-{uuid.uuid4().hex[:8]}"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        _refused_then_fixed(svc, sandbox, client)
        # one token call allowed today, 429 after it (headers no client reads: nothing warns ehrsync beforehand)
        fault = {"kind": "quota", "path": TOKEN, "quota": 1, "window_s": 86400, "quota_headers": "malformed"}
        sandbox_admin(sandbox, "faults", fault)
        sent = _sent_paths(svc)
        try:
            answer = svc.admin("POST", REACTIVATE)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["reactivated"], body["failed"], body["not_tried"], body["remaining"]) == (1, 1, 1, 2), body
            assert "stopped" in body, body
            assert body["stopped"].startswith(f"ehr_unavailable at connection {body['connections']['failed'][0]}")
            # the accepted one, the throttled one once: its Retry-After (the day's window) is longer than the vault
            # waits, so it is not asked again (it was three attempts before the vault read Retry-After); nothing more
            assert sent.count(TOKEN) == 2
        finally:
            sandbox_admin(sandbox, "faults", method="DELETE")


def test_a_disabled_provider_config_is_not_retried(make_settings: Any, sandbox: Any) -> None:
    """The admin disabled the provider config (here ``smart``'s row) before retrying its paused connections: the
    bulk retry and the one-connection retry are refused with 409 ``provider_disabled``, nothing sent to the EHR and
    every connection left ``client_rejected``, as a sign-in is refused; enabled again, one call retries them all.
    Before, a disabled ``smart`` row was not looked at: the retries went to the EHR and reactivated them."""
    client = f"disabled-{uuid.uuid4().hex[:8]}"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        app = _refused_then_fixed(svc, sandbox, client)
        assert svc.admin("POST", "/api/integrations/admin/providers/smart/disable").status_code == 200
        sent = _sent_paths(svc)

        bulk = svc.admin("POST", REACTIVATE)
        assert (bulk.status_code, bulk.json()["error"]) == (409, "provider_disabled"), bulk.text
        assert "/api/integrations/admin/providers/smart/enable" in bulk.json()["message"]
        assert bulk.json()["remaining"] == 3
        one = svc.admin("POST", REFRESH, json={"connection_id": app[1]})
        assert (one.status_code, one.json()["error"]) == (409, "provider_disabled"), one.text
        assert sent == []  # not a discovery, not a token request
        assert [_status(svc, cid) for cid in app] == ["client_rejected"] * 3
        [refused] = _events(svc, "provider.reactivate")
        assert refused["outcome"] == "refused" and refused["detail"]["error_code"] == "provider_disabled"
        url = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1"}).json()["url"]
        link = parse_qs(urlsplit(url).query)["link"][0]  # the tenant's own link is told why
        login = svc.admin("GET", "/api/integrations/smart/login", params={"link": link, "provider": "smart"})
        assert (login.status_code, login.json()["error"]) == (409, "provider_disabled"), login.text
        anonymous = svc.admin("GET", "/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart"})
        assert (anonymous.status_code, anonymous.json()["error"]) == (404, "not_found"), anonymous.text  # not told

        assert svc.admin("POST", "/api/integrations/admin/providers/smart/enable").status_code == 200
        again = svc.admin("POST", REACTIVATE)
        assert again.status_code == 200 and again.json()["reactivated"] == 3, again.text
        assert [_status(svc, cid) for cid in app] == ["active"] * 3


def test_a_rotated_client_id_each_connection_refreshes_pauses_and_is_retried_as_its_own_client(
    make_settings: Any, sandbox: Any
) -> None:
    """The operator rotated the provider config's client id (``old`` to ``new``, the config's credentials, here one
    secret, registered for both): connections authorized before keep ``old``, the client their refresh tokens were
    issued to (RFC 6749 §6). Each refreshes as its own client; a refusal of one client pauses only the connections
    using it; the bulk retry tries each client id first once: ``new`` still refused stops its own connections
    (``not_tried``), ``old`` fixed is accepted and its connections reactivated (before: 409, nothing else tried).
    Before, the auth service refreshed every connection as the config's current client id: the ``old`` ones were
    refused (``invalid_grant``: not that client's refresh token) and ended ``needs_reauth``, while the pauses
    grouped them by the id they stored."""
    old, new = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    practice: dict[str, Any] = {"ehrIntegrations": {"enabledProviders": []}}
    with running_service(make_settings, sandbox, practice) as svc:
        for client in (old, new):
            register(sandbox, svc, client, "confidential-symmetric", client_secret="secret-1")
        config = {"fhirBaseUrl": sandbox.fhir_base, "clientId": old, "clientSecret": "secret-1"}
        assert svc.admin("PUT", "/api/integrations/admin/providers/epic", json=config).status_code == 200
        assert svc.admin("POST", "/api/integrations/admin/providers/epic/enable").status_code == 200
        login = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=epic"
        pids = patient_ids(sandbox)
        before = [connect(sandbox, svc, old, pid, login) for pid in pids[:2]]
        rotated = svc.admin("PUT", "/api/integrations/admin/providers/epic", json={**config, "clientId": new})
        assert rotated.status_code == 200, rotated.text
        after = [connect(sandbox, svc, new, pid, login) for pid in pids[2:4]]
        for cid in [*before, *after]:  # each as the client its grant was issued to
            r = svc.admin("POST", REFRESH, json={"connection_id": cid})
            assert r.status_code == 200, r.text

        register(sandbox, svc, new, "confidential-symmetric", client_secret="secret-2")  # the EHR refuses `new`
        sent = _sent_paths(svc)
        assert svc.admin("POST", REFRESH, json={"connection_id": after[0]}).json()["error"] == "client_rejected"
        assert [_status(svc, cid) for cid in [*before, *after]] == ["active"] * 2 + ["client_rejected"] * 2
        [paused] = _events(svc, "connection.paused", after[1])
        assert paused["detail"]["refused_connection_id"] == after[0]
        assert svc.admin("POST", REFRESH, json={"connection_id": before[0]}).status_code == 200  # `old` goes on
        register(sandbox, svc, old, "confidential-symmetric", client_secret="secret-3")  # and is refused too
        assert svc.admin("POST", REFRESH, json={"connection_id": before[0]}).json()["error"] == "client_rejected"
        assert [_status(svc, cid) for cid in before] == ["client_rejected"] * 2
        assert sent.count(TOKEN) == 3  # one failed authentication per client id

        register(sandbox, svc, old, "confidential-symmetric", client_secret="secret-1")  # `old` fixed, `new` not
        answer = svc.admin("POST", "/api/integrations/admin/providers/epic/reactivate")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert sorted(body["connections"]["reactivated"]) == sorted(before), body
        assert body["connections"]["still_refused"] == [after[0]] and body["connections"]["not_tried"] == [after[1]]
        assert body["remaining"] == 2 and sent.count(TOKEN) == 6  # new refused once, old accepted twice
        assert [_status(svc, cid) for cid in [*before, *after]] == ["active"] * 2 + ["client_rejected"] * 2
