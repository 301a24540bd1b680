"""A tenant switch stored as neither ``true`` nor ``false`` (a row written before seeds were checked, or edited by
hand), read by the auth service over a real socket, the sandbox as the EHR and a real SQLite app database.

Before, the service read the row with pydantic's lax rules: ``"yes"`` or ``1`` turned a switch on (the SMART server
signed patients in, write scopes were asked, a Bulk export started) while the write-back held the tenant's notes
``tenant_setting_invalid``; ``"maybe"`` or ``null`` on a declared switch raised an uncaught ``ValidationError``: a 500
``internal_error`` with a stack in the log, on the admin listing, sign-in, Bulk export, and the shared EHR launch URL
of every tenant. Now the service reads switches by the write-back's rule (connectors/tenant_switches.py): a decision
that hangs on such a value is refused 409 ``configuration_error`` naming the setting and the value's JSON type (never
the value); a list leaves the provider off; a decision another switch already closes is taken as before."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.orm.attributes import flag_modified

from store.models import Connection, Tenant
from tests.auth_service.ehr import Service, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_patient_cookie_rotation import _sign_in

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
KINDS = [("maybe", "a string"), (None, "null"), ("yes", "a string"), (1, "a number")]


def _store(svc: Service, practice: dict[str, Any]) -> None:
    """The tenant's ``practice_settings`` stored as given (as an older row or a hand edit left them)."""
    with svc.ctx.db.session() as session, session.begin():
        tenant = session.get(Tenant, "t1")
        assert tenant is not None
        tenant.settings = {"practice_settings": practice}
        flag_modified(tenant, "settings")


def _group_connection(svc: Service, fhir_base: str) -> str:
    """An active Bulk (group) connection of tenant t1's ``smart`` provider; its id."""
    with svc.ctx.db.session() as session, session.begin():
        conn = Connection(tenant_id="t1", provider_id="smart", kind="group", fhir_base=fhir_base, client_id="app")
        conn.group_id, conn.status = "g1", "active"
        session.add(conn)
        session.flush()
        return conn.id


def _refused(r: httpx.Response, setting: str, kind: str, value: object) -> None:
    assert r.status_code == 409, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "configuration_error", body
    assert f"practice_settings.{setting} must be true or false, got {kind}" in body["message"], body
    if isinstance(value, str):
        assert value not in body["message"], body


@pytest.mark.parametrize(("value", "kind"), KINDS)
def test_a_sign_in_hanging_on_an_unreadable_smart_enabled_is_refused_naming_it(
    make_settings, sandbox, value: object, kind: str
) -> None:
    practice = smart_practice(sandbox, "app")
    with running_service(make_settings, sandbox, practice) as svc:
        _store(svc, {"smartFhir": {**practice["smartFhir"], "enabled": value}})
        _refused(httpx.get(svc.base_url + LOGIN), "smartFhir.enabled", kind, value)
        listed = svc.admin("GET", "/api/integrations/admin/providers")
        assert listed.status_code == 200, listed.text  # the admin listing still answers: smart shown off, named
        smart = next(p for p in listed.json() if p["provider"] == "smart")
        assert smart["enabled"] is False
        assert f"smartFhir.enabled must be true or false, got {kind}" in smart["setting_problem"]


def _asked_scopes(svc: Service) -> list[str]:
    r = httpx.get(svc.base_url + LOGIN)
    assert r.status_code == 302, r.text
    return parse_qs(urlsplit(r.headers["location"]).query)["scope"][0].split()


@pytest.mark.parametrize(("value", "kind"), KINDS)
def test_write_scopes_hanging_on_an_unreadable_enable_write_are_never_asked(
    make_settings, sandbox, value: object, kind: str
) -> None:
    practice = smart_practice(sandbox, "app")
    with running_service(make_settings, sandbox, practice, SMART_ENABLE_WRITE="true") as svc:
        _store(svc, {"smartFhir": {**practice["smartFhir"], "enableWrite": value, "enableNoteCreate": True}})
        _refused(httpx.get(svc.base_url + LOGIN), "smartFhir.enableWrite", kind, value)
        # the answer does not hang on it when the feature is off: signed in as before, no write scope asked
        _store(svc, {"smartFhir": {**practice["smartFhir"], "enableWrite": value, "enableNoteCreate": False}})
        assert not [s for s in _asked_scopes(svc) if s.endswith((".c", ".write"))]
        _store(svc, {"smartFhir": {**practice["smartFhir"], "enableWrite": True, "enableNoteCreate": True}})
        assert "patient/DocumentReference.c" in _asked_scopes(svc)  # fixed: asked


@pytest.mark.parametrize(("value", "kind"), KINDS)
def test_a_bulk_export_hanging_on_an_unreadable_enable_bulk_export_is_refused_naming_it(
    make_settings, sandbox, value: object, kind: str
) -> None:
    practice = smart_practice(sandbox, "app")
    closed = "http://127.0.0.1:9/graphql"  # never reached: the flag is checked first
    with running_service(make_settings, sandbox, practice, DAGSTER_GRAPHQL_URL=closed) as svc:
        _store(svc, {**practice, "ehrIntegrations": {"enableBulkExport": value}})
        conn_id = _group_connection(svc, sandbox.fhir_base)
        r = svc.admin("POST", "/api/integrations/ehr/bulk/start", json={"connectionId": conn_id})
        _refused(r, "ehrIntegrations.enableBulkExport", kind, value)


def test_one_tenants_unreadable_row_never_stops_another_tenants_ehr_launch(make_settings, sandbox) -> None:
    """The shared launch URL reads every tenant's settings: another tenant's ``"maybe"`` made it a 500 for all."""
    practice = smart_practice(sandbox, "app")
    with running_service(make_settings, sandbox, practice) as svc:
        with svc.ctx.db.session() as session, session.begin():
            odd = {"smartFhir": {"enabled": "maybe", "fhirBaseUrl": sandbox.fhir_base, "issuer": sandbox.fhir_base}}
            session.add(Tenant(id="t0", name="Other", settings={"practice_settings": odd}))
        r = httpx.get(f"{svc.base_url}/api/integrations/smart/launch", params={"iss": sandbox.fhir_base, "launch": "x"})
        assert r.status_code == 302, r.text  # t1's launch, as if t0 had no SMART server
        assert r.headers["location"].startswith(sandbox.base_url), r.headers["location"]


@pytest.mark.parametrize(
    "stored",
    [{"enabled": v} for v, _ in KINDS] + [{"allowedReturnOrigins": "https://host.example"}],
    ids=["maybe", "null", "yes", "one", "origins-not-a-list"],
)
def test_a_connected_patients_pages_never_hang_on_an_unreadable_setting(
    make_settings, sandbox, stored: dict[str, Any]
) -> None:
    """The done and disconnect pages only name the health system and offer a way back: a stored setting they do not
    decide on never refuses them. Before, a ``smartFhir.enabled`` of ``"yes"`` or ``1`` (which had signed the patient
    in) made both a 409 page, as ``null`` or ``"maybe"`` did (a 500 before that), and an ``allowedReturnOrigins``
    the service cannot read a 409: the patient could neither see the connection nor disconnect it in the browser."""
    pid = patient_ids(sandbox)[0]
    practice = smart_practice(sandbox, "pages-app")
    with running_service(make_settings, sandbox, practice) as svc:
        client = {"client_id": "pages-app", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        sandbox_admin(sandbox, "clients", client)
        sandbox_admin(sandbox, "preapprove", {"client_id": "pages-app", "patient_id": pid})
        with httpx.Client(base_url=svc.base_url, timeout=30, headers={"Accept": "text/html"}) as browser:
            _sign_in(browser, svc.base_url)
            origins = {k: v for k, v in stored.items() if k == "allowedReturnOrigins"}
            smart = {**practice["smartFhir"], **{k: v for k, v in stored.items() if k == "enabled"}}
            _store(svc, {"smartFhir": smart, **origins})
            done = browser.get("/connect/done")
            assert done.status_code == 200 and "Connected" in done.text, (done.status_code, done.text)
            page = browser.get("/connect/disconnect")
            assert page.status_code == 200, (page.status_code, page.text)
            fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
            r = browser.post("/connect/disconnect", data=fields, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/connect/done"), r.text
            assert "Disconnected" in browser.get("/connect/done").text


#: Settings that parse as JSON but are no object (a hand edit), and what the engine's ``read_switch`` calls them.
NO_OBJECT = [
    ([], "settings must be an object, got an array"),
    (False, "settings must be an object, got a boolean"),
    (0, "settings must be an object, got a number"),
    ([1], "settings must be an object, got an array"),
    ({"practice_settings": []}, "practice_settings must be an object, got an array"),
]


@pytest.mark.parametrize(("stored", "said"), NO_OBJECT, ids=["empty-list", "false", "zero", "list", "practice-list"])
def test_settings_that_are_no_object_are_named_by_every_api_that_reads_them(
    make_settings, sandbox, stored: object, said: str
) -> None:
    """Before, a falsy one (``[]``, ``false``, ``0``) was read as ``{}``: the Bulk export refused as if its flag were
    off, the SMART sign-in as if the server were not enabled, no provider listed, ``return_to`` refused as if the
    practice allowed no origin, and enabling a provider rewrote the row; a truthy one (``[1]``) was named by the
    switches only, the origins read as empty and a vendor's row a 500 in the listing. Now each answers 409
    ``configuration_error`` in the write-back's words, and the row is left for the seed to mend."""
    practice = smart_practice(sandbox, "app")
    epic = {"fhirBaseUrl": "https://epic.example/api/FHIR/R4", "clientId": "epic-app", "clientSecret": "s3cret-9"}
    integrations = {"enableBulkExport": True, "enabledProviders": ["epic"], "providerConfigs": {"epic": epic}}
    practice.update(ehrIntegrations=integrations, allowedReturnOrigins=["https://host.example"])
    with running_service(make_settings, sandbox, practice, DAGSTER_GRAPHQL_URL="http://127.0.0.1:9/graphql") as svc:
        conn_id = _group_connection(svc, sandbox.fhir_base)
        with svc.ctx.db.session() as session, session.begin():
            tenant = session.get(Tenant, "t1")
            assert tenant is not None
            tenant.settings = stored
            flag_modified(tenant, "settings")
        answers = {
            "bulk": svc.admin("POST", "/api/integrations/ehr/bulk/start", json={"connectionId": conn_id}),
            "sign-in": httpx.get(svc.base_url + LOGIN),
            "providers": svc.admin("GET", "/api/integrations/admin/providers"),
            "enable": svc.admin("POST", "/api/integrations/admin/providers/epic/enable"),
            "return_to": svc.admin(
                "POST",
                "/api/integrations/connect-links",
                json={"user_ref": "u1", "return_to": "https://host.example/x"},
            ),
        }
        with svc.ctx.db.session() as session:
            assert session.get(Tenant, "t1").settings == stored  # never rewritten as if it had been {}
    for where, r in answers.items():
        assert r.status_code == 409, (where, r.status_code, r.text)
        assert r.json()["error"] == "configuration_error", (where, r.text)
        assert f"the tenant's {said}; fix the setting (ehrsync auth seed)" in r.json()["message"], (where, r.text)
