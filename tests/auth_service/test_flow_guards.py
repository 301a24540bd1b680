"""Launch/callback guards that must hold before any EHR is contacted (SAL-06, SAL-09, SAL-13, SAL-39, SAL-41)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from store.models import utcnow
from store.states import OAuthStateStore
from tests.auth_service.conftest import NoNetwork
from tests.auth_service.practice import SMART


@pytest.fixture
def guarded(make_app):
    """An app whose outbound HTTP is recorded: these paths must decide without the network. Tenant ``t1`` is
    bootstrapped with ``practice`` (the SMART practice unless given; None: no tenant)."""
    transport = NoNetwork()

    def make(practice=SMART, **overrides):
        h = make_app(http=httpx.Client(transport=transport), **overrides)
        if practice is not None:
            h.bootstrap("t1", practice)
        return h

    make.transport = transport  # type: ignore[attr-defined]
    return make


def assert_hygiene(r: httpx.Response) -> None:
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    "iss",
    ["https://evil.example/fhir", "https://ehr.example/fhir/../other", "javascript:alert(1)", "https://ehr.example"],
)
def test_sal06_iss_not_allowlisted_no_outbound_call(guarded, iss: str) -> None:
    h = guarded()
    r = h.client.get("/api/integrations/smart/launch", params={"iss": iss, "launch": "xyz"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    assert "location" not in r.headers
    assert guarded.transport.calls == []


def test_sal06_allowlisted_but_no_tenant_issuer(guarded) -> None:
    h = guarded(SMART_ISSUER_ALLOWLIST="https://ehr.example/fhir https://other.example/fhir")
    r = h.client.get("/api/integrations/smart/launch", params={"iss": "https://other.example/fhir", "launch": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    assert guarded.transport.calls == []


def test_sal41_tenant_issuer_not_on_service_allowlist(guarded) -> None:
    h = guarded(SMART_ISSUER_ALLOWLIST="https://other.example/fhir")
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    r = h.client.get("/api/integrations/smart/launch", params={"iss": "https://ehr.example/fhir", "launch": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    assert guarded.transport.calls == []


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "evil"])
def test_open_redirect_refused(guarded, target: str) -> None:
    h = guarded()
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart", "return_to": target})
    assert r.status_code == 400 and r.json()["error"] == "invalid_redirect"
    assert guarded.transport.calls == []


def test_login_errors(guarded) -> None:
    h = guarded(practice={"smartFhir": {**SMART["smartFhir"], "enabled": False}})
    r = h.client.get("/api/integrations/smart/login", params={"provider": "smart"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"  # anonymous: not told it is disabled
    link = h.app.state.ctx.links.sign("t1", "u-1", ttl_seconds=600)
    r = h.client.get("/api/integrations/smart/login", params={"link": link, "provider": "smart"})
    assert r.status_code == 409 and r.json()["error"] == "provider_disabled"  # the tenant's own link is told
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "nope", "provider": "smart"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = h.client.get("/api/integrations/smart/login", params={"link": "bad.link", "provider": "smart"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_link"
    r = h.client.get("/api/integrations/smart/launch", params={"iss": "https://ehr.example/fhir"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"  # as TROUBLESHOOTING says
    assert r.json()["message"] == "missing or malformed query parameter(s): launch"
    r = h.client.get("/api/integrations/smart/launch", params={"launch": "xyz"})
    assert r.status_code == 400 and r.json()["message"].endswith(": iss")
    assert guarded.transport.calls == []


def test_anonymous_login_tells_no_one_which_tenants_or_providers_exist(guarded) -> None:
    """``/login?tenant=&provider=`` needs no credentials: an unknown tenant, a provider the tenant never configured
    and one it disabled must answer alike. Before, the answers differed ("unknown tenant 'nope'" 404, "provider 'epic'
    is not configured for this tenant" 404, 409 ``provider_disabled``), so anyone could list the tenants and their
    disabled providers. A browser gets the same error page for all three."""
    h = guarded(practice={"smartFhir": {**SMART["smartFhir"], "enabled": False}})
    asked = [("nope", "smart"), ("t1", "epic"), ("t1", "smart")]
    answers = []
    pages = []
    for tenant, provider in asked:
        r = h.client.get("/api/integrations/smart/login", params={"tenant": tenant, "provider": provider})
        answers.append((r.status_code, r.json()))
        page = h.client.get(
            "/api/integrations/smart/login",
            params={"tenant": tenant, "provider": provider},
            headers={"Accept": "text/html"},
        )
        pages.append((page.status_code, page.text))
    assert answers[0][0] == 404 and answers[0][1]["error"] == "not_found"
    assert answers[1:] == answers[:1] * 2, answers
    assert pages[1:] == pages[:1] * 2
    assert "nope" not in pages[0][1] and "epic" not in pages[0][1]
    assert guarded.transport.calls == []


def pending_state(h, sid: str, *, clock=None) -> str:  # type: ignore[no-untyped-def]
    """A state created for browser session ``sid`` (at ``clock``'s time), not yet consumed."""
    ctx = h.app.state.ctx
    store = OAuthStateStore(ctx.db, ctx.cipher, clock=clock) if clock else ctx.states
    return store.create(
        browser_session=sid,
        tenant_id="t1",
        provider_id="smart",
        issuer="https://ehr.example/fhir",
        code_verifier="v" * 64,
        scope="launch/patient openid",
    )


def test_sal13_unknown_state_400_no_token_call(guarded) -> None:
    h = guarded(practice=None)
    r = h.client.get("/api/integrations/smart/callback", params={"state": "forged", "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert_hygiene(r)
    r = h.client.get("/api/integrations/smart/callback", params={"code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert guarded.transport.calls == []


def test_sal13_state_single_use_and_error_handled_after_consuming(guarded) -> None:
    h = guarded()
    sid = "s" * 43
    state = pending_state(h, sid)
    h.client.cookies.set("ehrsync_sid", sid)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "error": "access_denied"})
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    assert_hygiene(r)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert guarded.transport.calls == []


def test_sal09_state_expired(guarded) -> None:
    h = guarded()
    sid = "s" * 43
    state = pending_state(h, sid, clock=lambda: utcnow() - timedelta(minutes=11))
    h.client.cookies.set("ehrsync_sid", sid)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert guarded.transport.calls == []


def test_sal09_state_bound_to_browser(guarded) -> None:
    h = guarded()
    state = pending_state(h, "a" * 43)
    h.client.cookies.set("ehrsync_sid", "b" * 43)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    # burnt: even the right browser cannot use it now
    h.client.cookies.set("ehrsync_sid", "a" * 43)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert guarded.transport.calls == []


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        ("invalid_scope", "scope_denied", 403),
        ("unauthorized_client", "unauthorized_client", 502),
        ("server_error", "ehr_unavailable", 503),
    ],
)
def test_sal36_authorize_errors_mapped(guarded, error: str, code: str, status: int) -> None:
    h = guarded()
    sid = "s" * 43
    state = pending_state(h, sid)
    h.client.cookies.set("ehrsync_sid", sid)
    r = h.client.get(
        "/api/integrations/smart/callback",
        params={"state": state, "error": error, "error_description": "<script>x</script>"},
    )
    assert r.status_code == status and r.json()["error"] == code
    assert "<script>" not in r.text
    html = h.client.get("/api/integrations/smart/callback", params={"state": "gone"}, headers={"Accept": "text/html"})
    assert (
        html.status_code == 400
        and "invalid_state" in html.text
        and html.headers["content-type"].startswith("text/html")
    )


def test_unreachable_ehr_is_ehr_unavailable(guarded) -> None:
    h = guarded()
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart"})
    assert r.status_code == 503 and r.json()["error"] == "ehr_unavailable"
    assert guarded.transport.calls and guarded.transport.calls[0].startswith("https://ehr.example/fhir/")
    # the patient pressed "Continue to sign in": their browser gets the page that says to try again later
    page = h.client.get(
        "/api/integrations/smart/login", params={"tenant": "t1", "provider": "smart"}, headers={"Accept": "text/html"}
    )
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "Your health system is not answering right now" in page.text and "ehr_unavailable" in page.text


def test_backend_needs_confidential_client_configuration_error(guarded) -> None:
    h = guarded(practice=None)
    key = h.bootstrap("t1", SMART)
    r = h.client.post(
        "/api/integrations/admin/backend-connections",
        headers={"X-API-Key": key},
        json={"provider": "smart", "scope": "system/*.rs"},
    )
    assert r.status_code == 409 and r.json()["error"] == "configuration_error"
    assert guarded.transport.calls == []


@pytest.mark.postgres
def test_sal13_state_single_use_on_postgres(guarded, postgres_url) -> None:
    h = guarded(DATABASE_URL=postgres_url)
    sid = "p" * 43
    state = pending_state(h, sid)
    h.client.cookies.set("ehrsync_sid", sid)
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "error": "access_denied"})
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    r = h.client.get("/api/integrations/smart/callback", params={"state": state, "code": "c0de"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert guarded.transport.calls == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/connect", "invalid_link"),  # a connect link cut at its "?" by a mail or text message
        ("/connect/results?q=a", "invalid_link"),
        ("/connect?link=" + "x" * 5000, "invalid_link"),
        ("/api/integrations/smart/callback?state=s&code=" + "c" * 5000, "invalid_request"),
        (
            "/api/integrations/smart/callback?state=s&error=access_denied&error_description=" + "d" * 17000,
            "invalid_request",
        ),
        ("/api/integrations/smart/launch?iss=https://ehr.example/fhir", "invalid_request"),
        ("/api/integrations/smart/login?tenant=t1&provider=", "invalid_request"),
    ],
)
def test_a_browser_gets_the_error_page_for_a_malformed_request_not_json(guarded, url: str, code: str) -> None:
    """Patient-facing routes a browser opens: a missing or malformed parameter is the error page (plain words,
    the code for support), not a JSON body; API callers still get the JSON contract."""
    h = guarded()
    r = h.client.get(url, headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert f'<code id="error-code">{code}</code>' in r.text and "d" * 300 not in r.text and "c" * 300 not in r.text
    assert r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    r = h.client.get(url)
    assert r.status_code in (400, 422) and r.json()["error"] in (code, "validation_error")
    assert guarded.transport.calls == []


@pytest.mark.parametrize(("method", "url", "status"), [("GET", "/connect/nope", 404), ("DELETE", "/connect", 405)])
def test_a_browser_on_a_patient_page_that_does_not_exist_gets_the_error_page(
    guarded, method: str, url: str, status: int
) -> None:
    """404/405 under ``/connect`` (a link mangled by a mail client, a stray form): the page for a browser, with the
    status kept (and ``Allow`` on 405); API callers still get the JSON contract."""
    h = guarded()
    page = h.client.request(method, url, headers={"Accept": "text/html"})
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert '<code id="error-code">' in page.text
    if status == 405:
        assert "GET" in page.headers["allow"]
    api = h.client.request(method, url)
    assert api.status_code == status and api.json()["error"] in ("not_found", "invalid_request")
