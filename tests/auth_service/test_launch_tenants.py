"""An EHR launch is bound to the tenant the launch URL names, never guessed (SAL-06), and the id_token's keys
come only from an allow-listed issuer (SAL-41).

Two clinics on one EHR instance (one Epic organization) share its issuer: the shared launch URL cannot say which
clinic launched, so it is refused (``ambiguous_issuer``) and each clinic registers its own launch URL
``/api/integrations/smart/launch/{tenant}`` (``/{tenant}/{provider}`` for two providers on one EHR).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from auth_service.pages.error_text import RESTART_ELSEWHERE
from auth_service.services.errors import IssuerRefusedError
from auth_service.services.launch import find_launch_target
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from store import save_provider_config
from store.models import Connection
from tests.auth_service.conftest import NoNetwork
from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.practice import ISSUER, SMART
from tests.auth_service.test_flows_sandbox import register
from tests.connectors.scripted import scripted_server, send

LAUNCH = "/api/integrations/smart/launch"
OPAQUE_LAUNCH = "opaque-launch-7f3a9c"  # what an EHR sends; never echoed to the browser
OTHER_ISSUER = "https://other.example/fhir"


@pytest.fixture
def clinics(make_app):
    """Two clinics (``clinic-a``, ``clinic-b``) on the one allow-listed EHR, ``clinic-c`` on another; outbound
    HTTP recorded (these refusals must not reach the network)."""
    transport = NoNetwork()
    h = make_app(http=httpx.Client(transport=transport), SMART_ISSUER_ALLOWLIST=f"{ISSUER} {OTHER_ISSUER}")
    h.bootstrap("clinic-b", SMART)
    h.bootstrap("clinic-a", SMART)
    h.bootstrap("clinic-c", {"smartFhir": {**SMART["smartFhir"], "issuer": OTHER_ISSUER, "fhirBaseUrl": OTHER_ISSUER}})
    h.transport = transport
    return h


def _launch(h: Any, path: str, iss: str = ISSUER, **headers: str) -> httpx.Response:
    response: httpx.Response = h.client.get(path, params={"iss": iss, "launch": OPAQUE_LAUNCH}, headers=headers)
    return response


def test_sal06_shared_launch_url_is_refused_when_two_clinics_share_the_issuer(clinics) -> None:
    """SAL-06: the issuer two tenants share says nothing about which clinic launched: refused, not guessed."""
    with pytest.raises(IssuerRefusedError) as refused:
        find_launch_target(clinics.app.state.ctx, ISSUER)
    assert refused.value.code == "ambiguous_issuer"
    r = _launch(clinics, LAUNCH)
    assert r.status_code == 400 and r.json()["error"] == "ambiguous_issuer"
    message = r.json()["message"]
    assert "more than one clinic" in message and f"http://testserver{LAUNCH}/<tenant id>" in message
    assert "clinic-a" not in r.text and "clinic-b" not in r.text  # the caller is anonymous: no tenant named
    assert "location" not in r.headers and clinics.transport.calls == []


def test_sal06_ambiguous_launch_page_names_the_problem_without_the_launch_value(clinics) -> None:
    """SAL-06: a browser gets the error page: plain words, the code for support, no launch value, no retry."""
    r = _launch(clinics, LAUNCH, accept="text/html")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "not set up yet for launching from your health system" in r.text
    assert "register its own launch link" in r.text and "ambiguous_issuer" in r.text
    assert OPAQUE_LAUNCH not in r.text and "clinic-a" not in r.text
    assert 'id="retry"' not in r.text  # only the EHR can launch again
    assert 'id="restart-hint"' not in r.text  # trying again does not help: the practice must register its link
    assert clinics.transport.calls == []


@pytest.mark.parametrize(
    "config",
    [
        {"clientId": "app", "issuer": "http://["},  # an issuer that is no URL (urlsplit refuses it)
        {"clientId": "app", "note": {"$enc": "v1.nokid.AAAA"}},  # a "sealed" member that does not open
    ],
)
def test_another_tenants_broken_provider_config_never_stops_a_clinics_launch(clinics, config) -> None:
    """The shared launch URL reads every tenant's providers. One tenant's admin storing a ``smart`` config whose
    issuer is no URL, or a member shaped like a sealed secret that does not open, made every launch through the
    shared URL fail for every clinic (500 ``internal_error``; 502 telling the anonymous caller about a missing
    encryption key); it is skipped (and logged) now, so clinic-c's launch goes on to its EHR as before. (The admin
    API now refuses the sealed-looking member; a row stored before that is written here as it was then.)"""
    before = _launch(clinics, LAUNCH, iss=OTHER_ISSUER)
    assert before.status_code == 503 and before.json()["error"] == "ehr_unavailable"  # at clinic-c's EHR (no network)
    clinics.bootstrap("clinic-d", SMART)
    ctx = clinics.app.state.ctx
    with ctx.db.session() as session, session.begin():
        save_provider_config(session, ctx.cipher, tenant_id="clinic-d", provider_id="smart", config=config)
    clinics.transport.calls.clear()
    after = _launch(clinics, LAUNCH, iss=OTHER_ISSUER)
    assert (after.status_code, after.json()) == (before.status_code, before.json())
    assert clinics.transport.calls == [f"{OTHER_ISSUER}/.well-known/smart-configuration"]


def test_sal06_clinic_launch_url_binds_the_launch_to_its_tenant(clinics) -> None:
    """SAL-06: the clinic-specific launch URL picks its tenant among those sharing the issuer."""
    ctx = clinics.app.state.ctx
    assert find_launch_target(ctx, ISSUER, tenant_id="clinic-a") == ("clinic-a", "smart")
    assert find_launch_target(ctx, ISSUER, tenant_id="clinic-b") == ("clinic-b", "smart")
    assert find_launch_target(ctx, OTHER_ISSUER) == ("clinic-c", "smart")  # one tenant: the shared URL works
    r = _launch(clinics, f"{LAUNCH}/clinic-a")  # past the guard: only then is the EHR contacted (discovery)
    assert clinics.transport.calls == [f"{ISSUER}/.well-known/smart-configuration"]
    assert r.json()["error"] == "ehr_unavailable"  # this test's network is off


@pytest.mark.parametrize(
    ("path", "iss"),
    [
        (f"{LAUNCH}/clinic-c", ISSUER),  # the clinic exists but is configured for another EHR
        (f"{LAUNCH}/no-such-clinic", ISSUER),
        (f"{LAUNCH}/clinic-a", "https://evil.example/fhir"),  # not allow-listed: refused first
        (f"{LAUNCH}/clinic-a/no-such-provider", ISSUER),
    ],
)
def test_sal06_clinic_launch_url_still_checks_the_issuer(clinics, path: str, iss: str) -> None:
    """SAL-06: naming a tenant in the launch URL never skips the allow-list or the tenant's own issuer."""
    r = _launch(clinics, path, iss)
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    assert "location" not in r.headers and clinics.transport.calls == []


def test_sal06_two_providers_of_one_clinic_on_one_ehr_need_the_provider_launch_url(make_app) -> None:
    """SAL-06: a clinic with two client registrations on the same EHR: the provider is named, never guessed."""
    transport = NoNetwork()
    h = make_app(http=httpx.Client(transport=transport))
    generic = {"fhirBaseUrl": ISSUER, "clientId": "second-app"}
    h.bootstrap(
        "t1", {**SMART, "ehrIntegrations": {"enabledProviders": ["generic"], "providerConfigs": {"generic": generic}}}
    )
    for path in (LAUNCH, f"{LAUNCH}/t1"):
        r = _launch(h, path)
        assert r.status_code == 400 and r.json()["error"] == "ambiguous_issuer"
        assert f"{LAUNCH}/<tenant id>/<provider id>" in r.json()["message"]
    ctx = h.app.state.ctx
    assert find_launch_target(ctx, ISSUER, tenant_id="t1", provider_id="generic") == ("t1", "generic")
    assert find_launch_target(ctx, ISSUER, tenant_id="t1", provider_id="smart") == ("t1", "smart")
    assert transport.calls == []


def _second_tenant(svc: Any, tenant_id: str, practice: dict[str, Any]) -> str:
    ctx = svc.ctx
    seed = TenantSeed.model_validate({"id": tenant_id, "name": f"Clinic {tenant_id}", "practice_settings": practice})
    with ctx.db.session() as session, session.begin():
        return bootstrap_tenant(session, seed, ctx.cipher).api_key


def _status(svc: Any, api_key: str) -> httpx.Response:
    return httpx.get(f"{svc.base_url}/api/integrations/smart/status", headers={"X-API-Key": api_key}, timeout=30)


def test_ehr_launch_sal06_two_clinics_on_one_sandbox_each_get_their_own_launches(make_settings, sandbox) -> None:
    """SAL-06 end to end: the sandbox's EHR launcher opens each clinic's launch URL; the connection lands in the
    clinic whose URL it was, and the shared URL is refused."""
    pid = patient_ids(sandbox)[2]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "clinic-one-app")) as svc:
        key_two = _second_tenant(svc, "t2", smart_practice(sandbox, "clinic-two-app"))
        for client_id in ("clinic-one-app", "clinic-two-app"):
            register(sandbox, svc, client_id, "public")
        shared = f"{svc.base_url}{LAUNCH}?iss={quote(sandbox.fhir_base)}&launch=x"
        refused = httpx.get(shared, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"] == "ambiguous_issuer"
        sandbox_admin(sandbox, "preapprove", {"client_id": "clinic-two-app", "patient_id": pid})
        launcher = sandbox.admin.ehr_launch_url(f"{svc.base_url}{LAUNCH}/t2", pid)
        opened = httpx.get(launcher, timeout=30)  # the EHR opens the registered URL with iss + launch
        assert opened.status_code == 302 and opened.headers["location"].startswith(f"{svc.base_url}{LAUNCH}/t2?")
        done = authorize_headless(svc, opened.headers["location"])
        assert done.status_code == 303 and done.headers["location"] == "/connect/done", done.text
        status = _status(svc, key_two).json()  # t2's key sees only t2's connections
        assert status["patient"] == pid and status["status"] == "active"
        with svc.ctx.db.session() as session:
            row = session.get(Connection, status["connection_id"])
            assert row is not None and (row.tenant_id, row.client_id) == ("t2", "clinic-two-app")
        assert svc.admin("GET", "/api/integrations/smart/status").json()["error"] == "not_connected"


@contextmanager
def _discovered_issuer_elsewhere(sandbox: Any) -> Iterator[tuple[str, Any]]:
    """The sandbox's smart-configuration names an issuer on another server, which records what it is asked."""
    with scripted_server() as (url, script):
        script.actions.append(send(404, b"{}", {"Content-Type": "application/json"}))
        issuer = f"{url}/oidc"
        sandbox_admin(sandbox, "settings", {"smart_issuer": issuer})
        yield issuer, script


def _callback_with_issuer_elsewhere(make_settings: Any, sandbox: Any, listed: bool) -> tuple[httpx.Response, Any]:
    """A standalone connect whose EHR names an OpenID issuer on another (recording) server, listed or not on
    SMART_ISSUER_ALLOWLIST: the callback's answer and what that server was asked. No connection may be kept."""
    pid = patient_ids(sandbox)[0]
    with _discovered_issuer_elsewhere(sandbox) as (issuer, script):
        allow = f"{sandbox.fhir_base} {issuer}" if listed else sandbox.fhir_base
        practice = smart_practice(sandbox, "sal41-app")
        with running_service(make_settings, sandbox, practice, SMART_ISSUER_ALLOWLIST=allow) as svc:
            register(sandbox, svc, "sal41-app", "public")
            sandbox_admin(sandbox, "preapprove", {"client_id": "sal41-app", "patient_id": pid})
            r = authorize_headless(svc, f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart")
            assert svc.admin("GET", "/api/integrations/smart/status").json()["error"] == "not_connected"
            audit = svc.admin("GET", "/api/integrations/admin/audit").json()
    failed = [
        e["detail"]["error_code"] for e in audit if e["action"] == "authorize.complete" and e["outcome"] == "failure"
    ]
    assert failed[0] == r.json()["error"]  # the newest failure is this callback's, under the code it answered
    return r, script


def test_sal41_id_token_keys_are_fetched_only_from_an_allowlisted_issuer(make_settings, sandbox) -> None:
    """SAL-41: the id_token's OpenID configuration and JWKS are fetched from the discovered issuer only when it
    is on SMART_ISSUER_ALLOWLIST; otherwise the callback is refused before any request reaches it."""
    r, script = _callback_with_issuer_elsewhere(make_settings, sandbox, listed=False)
    assert script.seen == []
    assert r.status_code == 400 and r.json()["error"] == "invalid_issuer"
    # the operator lists it (an EHR whose OpenID issuer is not its FHIR base): now it is asked; it has no OpenID
    # configuration (404), so the keys are the ones the smart-configuration names (SAL-33): they verify the
    # signature, but the id_token's iss is not that discovered issuer
    r, script = _callback_with_issuer_elsewhere(make_settings, sandbox, listed=True)
    assert [path for _, path, _ in script.seen] == ["/oidc/.well-known/openid-configuration"]
    assert r.json()["error"] == "invalid_id_token"


def test_an_ehr_launch_whose_ehr_is_down_says_how_to_try_again(make_settings, sandbox) -> None:
    """An EHR launch meeting a health system that is down: the page says "Please try again in a few minutes" but
    can offer no "Try again" (no connect link in this flow: only the EHR launches again). It said so with no way
    to; it now says where to start again."""
    pid = patient_ids(sandbox)[2]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "launch-down-app")) as svc:
        register(sandbox, svc, "launch-down-app", "public")
        launcher = sandbox.admin.ehr_launch_url(f"{svc.base_url}{LAUNCH}/t1", pid)
        opened = httpx.get(launcher, timeout=30)
        assert opened.status_code == 302
        sandbox_admin(
            sandbox,
            "faults",
            {"kind": "503", "path": urlsplit(sandbox.fhir_base).path, "times": None, "retry_after": ""},
        )
        try:
            page = httpx.get(opened.headers["location"], headers={"Accept": "text/html"}, timeout=30)
        finally:
            sandbox_admin(sandbox, "faults", method="DELETE")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "Your health system is not answering right now" in page.text and "ehr_unavailable" in page.text
    assert 'id="retry"' not in page.text
    assert 'id="restart-hint"' in page.text and RESTART_ELSEWHERE.replace("'", "&#39;") in page.text
