"""A patient reloads the callback page while the EHR is slow to answer the token request (SAL-13 single use).

The reload from the same browser gets "still connecting" (a page that reloads itself), then the first request's
own outcome; the code is sent to the EHR exactly once. Another browser with that state is refused as before.
Against the sandbox over real sockets, its token endpoint slowed by its ``slow`` fault.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from auth_service.services.callback_replay import replay_key
from store.models import Connection, utcnow
from store.states import OAuthStateStore
from tests.auth_service.conftest import NoNetwork
from tests.auth_service.ehr import CALLBACK, Service, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_flow_guards import pending_state
from tests.auth_service.test_flows_sandbox import register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
HTML = {"Accept": "text/html,application/xhtml+xml"}
# The reload waits 2 s for the first request's answer before it says so, and must have done so before that answer
# comes: the sandbox holds the token request (up to its longest delay) until the test has the reload's answer, then
# releases it (a fixed 5 s, then 10 s, had to guess how long a busy CI machine takes to send and serve the reload).
TOKEN_DELAY_S = 60.0
ARMED = 10  # firings of the slow fault: the firings left tell how many token requests reached the sandbox


def callback_url(svc: Service, browser: httpx.Client) -> str:
    """Sign in at the sandbox (pre-approved) and stop at the callback URL it redirects to."""
    r = browser.get(svc.base_url + LOGIN)
    assert r.status_code == 302, r.text
    r = browser.get(r.headers["location"])
    assert r.status_code in (302, 303), r.text[:300]
    url = str(r.headers["location"])
    assert url.startswith(svc.redirect_uri) and "code" in parse_qs(urlsplit(url).query), url
    return url


def token_requests(sandbox: Any) -> int:
    left = [f["times"] for f in sandbox_admin(sandbox, "faults", method="GET") if f["path"] == "/oauth/token"]
    return ARMED - (left[0] if left else 0)


def connections(svc: Service) -> int:
    with svc.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Connection)) or 0)


def reload_while_slow(svc: Service, sandbox: Any, client_id: str) -> None:
    register(sandbox, svc, client_id, "public")
    sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": patient_ids(sandbox)[0]})
    sandbox_admin(
        sandbox,
        "faults",
        {"kind": "slow", "path": "/oauth/token", "method": "POST", "delay_s": TOKEN_DELAY_S, "times": ARMED},
    )
    with httpx.Client(timeout=30, headers=HTML) as browser:
        url = callback_url(svc, browser)
        first: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: first.append(browser.get(url)))
        worker.start()
        deadline = time.monotonic() + 30
        while token_requests(sandbox) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert token_requests(sandbox) == 1  # the first request is now waiting on the slow token endpoint

        with httpx.Client(timeout=30, headers=HTML, cookies=browser.cookies) as reload:
            waiting = reload.get(url)  # the patient reloads: same browser, same URL
            assert waiting.status_code == 202, waiting.text[:500]
            assert "Still connecting your record" in waiting.text
            assert '<meta http-equiv="refresh" content="0">' in waiting.text  # each reload waits on the server
            assert (
                waiting.headers["cache-control"] == "no-store" and waiting.headers["referrer-policy"] == "no-referrer"
            )
            assert "took too long" not in waiting.text and "error-code" not in waiting.text
            assert worker.is_alive()  # the token request is still held: the reload was answered while it ran
            sandbox_admin(sandbox, "faults/release")
            worker.join(timeout=60)
            assert first and first[0].status_code == 303 and first[0].headers["location"] == "/connect/done"

            done = reload.get(url)  # the next refresh: the first request's outcome, and this browser's cookie
            assert done.status_code == 303 and done.headers["location"] == "/connect/done", done.text[:500]
            assert "ehrsync_conn" in done.cookies
            page = reload.get(svc.base_url + "/connect/done")
            assert page.status_code == 200 and "You're connected" in page.text

    assert token_requests(sandbox) == 1  # the code went to the EHR exactly once
    assert connections(svc) == 1
    for cookies in ({}, {"ehrsync_sid": "x" * 43}):  # another browser: no binding cookie, or another one
        other = httpx.get(url, headers=HTML, cookies=cookies, timeout=30)
        assert other.status_code == 400 and "Your sign-in took too long or started in another browser" in other.text
        assert httpx.get(url, cookies=cookies, timeout=30).json()["error"] == "invalid_state"
    assert token_requests(sandbox) == 1 and connections(svc) == 1


def test_sal13_reload_during_a_slow_token_exchange_is_still_connecting_then_connected(make_settings, sandbox) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "reload-app")) as svc:
        reload_while_slow(svc, sandbox, "reload-app")


@pytest.mark.postgres
def test_sal13_reload_during_a_slow_token_exchange_on_postgres(make_settings, sandbox, postgres_url) -> None:
    practice = smart_practice(sandbox, "reload-pg-app")
    with running_service(make_settings, sandbox, practice, DATABASE_URL=postgres_url) as svc:
        reload_while_slow(svc, sandbox, "reload-pg-app")


def test_sal13_reload_after_a_failed_exchange_shows_that_error_and_sends_no_code(make_settings, sandbox) -> None:
    """The sandbox refuses the first exchange without using the code: a second exchange would succeed."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "reload-fail-app")) as svc:
        register(sandbox, svc, "reload-fail-app", "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": "reload-fail-app", "patient_id": patient_ids(sandbox)[0]})
        with httpx.Client(timeout=30) as browser:
            url = callback_url(svc, browser)
            sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_grant"})
            first = browser.get(url)
            assert first.status_code == 502 and first.json()["error"] == "invalid_grant"
            again = browser.get(url)
            assert again.status_code == 502 and again.json() == first.json()
            page = browser.get(url, headers=HTML)
            assert page.status_code == 502 and "invalid_grant" in page.text and "took too long" not in page.text
        assert connections(svc) == 0


def _consumed(h: Any, sid: str, code: str, ago: timedelta) -> str:
    """A state this browser's callback consumed ``ago`` and is still exchanging (pending)."""
    ctx = h.app.state.ctx
    clock = lambda: utcnow() - ago  # noqa: E731
    state = pending_state(h, sid, clock=clock)
    OAuthStateStore(ctx.db, ctx.cipher, clock=clock).consume(
        state, browser_session=sid, replay_key=replay_key(code, None)
    )
    return state


def test_sal13_still_connecting_is_bounded_by_the_exchange_deadline(make_app) -> None:
    """4 calls x EHRSYNC_REQUEST_DEADLINE_S (2 s here) + 30 s: then the reload gets an error, not another wait.
    Before that, a reload waits about 2 s for the answer on the server (the page refreshes at once)."""
    transport = NoNetwork()
    h = make_app(http=httpx.Client(transport=transport), EHRSYNC_REQUEST_DEADLINE_S="2")
    sid = "s" * 43
    h.client.cookies.set("ehrsync_sid", sid)
    recent = _consumed(h, sid, "c0de", timedelta(seconds=5))
    started = time.monotonic()
    r = h.client.get(CALLBACK, params={"state": recent, "code": "c0de"}, headers=HTML)
    assert r.status_code == 202 and "Still connecting" in r.text
    assert time.monotonic() - started >= 2.0  # paced by the server, not a tight refresh loop
    r = h.client.get(CALLBACK, params={"state": recent, "code": "other"})  # not a reload of that callback
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"

    stale = _consumed(h, sid, "c0de", timedelta(seconds=40))
    r = h.client.get(CALLBACK, params={"state": stale, "code": "c0de"})
    assert r.status_code == 503 and r.json()["error"] == "ehr_unavailable"
    assert "not over within 38 s" in r.json()["message"]
    page = h.client.get(CALLBACK, params={"state": stale, "code": "c0de"}, headers=HTML)
    assert page.status_code == 503 and "refresh" not in page.text and "took too long" not in page.text
    assert transport.calls == []  # no token request from any reload


def test_sal13_still_connecting_outlasts_the_call_budget_waits_of_the_first_request(make_app) -> None:
    """The first request may wait for a vendor's shared call budget (eCW) before discovery and before the token
    request, up to EHR_CALL_BUDGET_WAIT_SECONDS each: a reload must not call the sign-in unfinished ("start again")
    while that request can still be waiting and then connect. 60 s allowed: 4 x 2 s + 2 x 60 s + 10 s."""
    transport = NoNetwork()
    h = make_app(
        http=httpx.Client(transport=transport), EHRSYNC_REQUEST_DEADLINE_S="2", EHR_CALL_BUDGET_WAIT_SECONDS="60"
    )
    sid = "s" * 43
    h.client.cookies.set("ehrsync_sid", sid)
    waiting = _consumed(h, sid, "c0de", timedelta(seconds=100))  # past 4 x 2 s + 30 s, not past the budget waits
    r = h.client.get(CALLBACK, params={"state": waiting, "code": "c0de"}, headers=HTML)
    assert r.status_code == 202 and "Still connecting" in r.text
    stale = _consumed(h, sid, "c0de", timedelta(seconds=140))
    r = h.client.get(CALLBACK, params={"state": stale, "code": "c0de"})
    assert r.status_code == 503 and "not over within 138 s" in r.json()["message"]
    assert transport.calls == []


def test_reload_of_a_callback_that_stopped_after_storing_its_connection_says_the_records_were_connected(
    make_app,
) -> None:
    """Its first request stored the connection and its tokens, then stopped without an answer (a killed process):
    once the wait is over, "Nothing was shared" would be untrue, so the reload says the records were connected."""
    from connectors.smart.token import TokenResponse
    from store.states import CallbackOutcome

    h = make_app(http=httpx.Client(transport=NoNetwork()), EHRSYNC_REQUEST_DEADLINE_S="2")
    ctx, sid = h.app.state.ctx, "s" * 43
    h.client.cookies.set("ehrsync_sid", sid)
    h.bootstrap("t1")
    with ctx.db.session() as session, session.begin():
        session.add(
            Connection(id="conn-1", tenant_id="t1", provider_id="smart", fhir_base="https://ehr", client_id="c")
        )
    ctx.vault.save_token_response("conn-1", TokenResponse("at-secret", "Bearer", 300, "patient/*.rs"))
    stale = _consumed(h, sid, "c0de", timedelta(seconds=40))
    OAuthStateStore(ctx.db, ctx.cipher).record_outcome(stale, CallbackOutcome("pending", connection_id="conn-1"))
    r = h.client.get(CALLBACK, params={"state": stale, "code": "c0de"})
    assert r.status_code == 500 and r.json()["error"] == "interrupted_after_connecting"
    assert r.json()["connectionId"] == "conn-1"
    page = h.client.get(CALLBACK, params={"state": stale, "code": "c0de"}, headers=HTML)
    assert "Your records were connected, but something went wrong afterwards" in page.text
    assert "Nothing was shared" not in page.text
