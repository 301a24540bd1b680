"""Backend connections follow what the vendor's plugin declares (vendors.md §1, §3): a Group-only vendor's
connection needs a group id."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from auth_service.services.connections import create_backend_connection
from auth_service.services.errors import ServiceError
from auth_service.services.profiles import resolve_profile
from tests.auth_service.conftest import AppHandle

TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
CERNER = {"fhirBaseUrl": "https://fhir-ehr.cerner.com", "clientId": "c", "clientSecret": "s", "tenantId": TENANT}
ORACLE_BASE = f"https://fhir-ehr.cerner.com/r4/{TENANT}"
#: An Oracle Health smart-configuration as a v1-only EHR serves it to a backend client with a client secret.
ORACLE_V1_BACKEND_CONFIG = {
    "issuer": ORACLE_BASE,
    "authorization_endpoint": "https://authorization.cerner.com/authorize",
    "token_endpoint": "https://authorization.cerner.com/token",
    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    "grant_types_supported": ["client_credentials"],
    "capabilities": ["client-confidential-symmetric", "permission-v1"],
}


def _refusing_transport(calls: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_bdx01_group_only_vendor_backend_connection_without_group_is_refused_before_any_ehr_call(
    make_app: Callable[..., AppHandle],
) -> None:
    """BDX-01: Oracle Health exports only at Group level; a backend connection without ``group_id`` could never
    export, so it is refused (400 naming ``group_id``) and audited, with no discovery or token call."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"https://fhir-ehr.cerner.com/r4/{TENANT}")
    practice = {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    key = h.bootstrap("t1", practice)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"provider": "cerner", "scope": "system/Patient.read system/Observation.read"}
    r = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and "group_id" in r.json()["message"]
    assert calls == []
    events = h.client.get("/api/integrations/admin/audit", headers=headers).json()
    refused = next(e for e in events if e["action"] == "backend.create")
    assert refused["outcome"] == "failure" and refused["detail"]["error_code"] == "invalid_request"


def test_bdx01_an_empty_group_id_is_no_group(make_app: Callable[..., AppHandle]) -> None:
    """BDX-01: ``"group_id": ""`` is refused by the API (a group id has at least one character), and the service
    treats an empty one as none, never as a group (found in review: it reached discovery and token calls)."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"https://fhir-ehr.cerner.com/r4/{TENANT}")
    practice = {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    key = h.bootstrap("t1", practice)
    body = {"provider": "cerner", "scope": "system/Patient.read", "group_id": ""}
    r = h.client.post(
        "/api/integrations/admin/backend-connections", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.group_id", r.text
    with pytest.raises(ServiceError, match="group_id") as refused:
        create_backend_connection(h.app.state.ctx, "t1", "cerner", "system/Patient.read", "admin", group_id="")
    assert refused.value.code == "invalid_request"
    assert calls == []


@pytest.mark.parametrize("group_id", ["../Patient", "g1/$export?_type=Patient", "g 1", "g1\n"])
def test_bdx01_a_group_id_that_is_no_fhir_id_is_refused_when_the_connection_is_created(
    make_app: Callable[..., AppHandle], group_id: str
) -> None:
    """BDX-01: a group id goes in ``Group/{id}/$export``, so one that is no FHIR id (a path, a query, a space) is
    refused by the API naming the field, before any EHR call; before, it was stored and every run of the connection
    failed ``connection_not_syncable``. Ids with ``.``/``-`` and 64 characters are taken (no 422)."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"https://fhir-ehr.cerner.com/r4/{TENANT}")
    practice = {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    headers = {"Authorization": f"Bearer {h.bootstrap('t1', practice)}"}
    body = {"provider": "cerner", "scope": "system/Patient.read", "group_id": group_id}
    r = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.group_id", r.text
    assert calls == []
    for legal in ("11ec-d16a-c763b73e-98e8-a31715e6a2bf", "e3iabhmS8rsueyz7.QwjVXJ", "a" * 64):
        body["group_id"] = legal
        r = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
        assert r.status_code == 503, r.text  # past validation: the (refusing) EHR was asked


@pytest.mark.parametrize("wildcard", ["system/*.read", "system/Observation.*", "system/*.rs"])
def test_an_oracle_backend_connection_asking_a_wildcard_scope_is_refused_naming_it(
    make_app: Callable[..., AppHandle], wildcard: str
) -> None:
    """vendors.md §3: Oracle Health takes each resource listed explicitly (no ``*``) [doc]; a backend connection
    asking a wildcard is refused (400 naming the scope) before any discovery or token call, not sent for the EHR to
    refuse as if the app's registration were wrong."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"https://fhir-ehr.cerner.com/r4/{TENANT}")
    practice = {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    headers = {"Authorization": f"Bearer {h.bootstrap('t1', practice)}"}
    body = {"provider": "cerner", "scope": f"system/Patient.read {wildcard}", "group_id": "g-1"}
    r = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and wildcard in r.json()["message"]
    assert "system/Patient.read" not in r.json()["message"].split("list each")[0]
    assert calls == []
    events = h.client.get("/api/integrations/admin/audit", headers=headers).json()
    refused = next(e for e in events if e["action"] == "backend.create")
    assert refused["outcome"] == "failure" and refused["detail"]["error_code"] == "invalid_request"


PCC_HOST = "https://connect.pcc.example"
PCC = {"fhirBaseUrl": PCC_HOST, "clientId": "c", "clientSecret": "s", "pccTenantId": "t-9"}


@pytest.mark.parametrize("app_type", [None, "provider", "patient"])
def test_a_pointclickcare_app_that_is_not_a_bulk_app_makes_no_backend_connection(
    make_app: Callable[..., AppHandle], app_type: str | None
) -> None:
    """vendors.md §5: PointClickCare registers an app as patient-facing, provider-facing or bulk data; only a bulk
    app may mint client_credentials tokens, so any other is refused (409 naming appType) before any EHR call."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"{PCC_HOST}/fhir/R4/t-9")
    config = {**PCC, **({"appType": app_type} if app_type else {})}
    practice = {"ehrIntegrations": {"enabledProviders": ["pcc"], "providerConfigs": {"pcc": config}}}
    key = h.bootstrap("t1", practice)
    body = {"provider": "pcc", "scope": "system/Patient.read"}
    r = h.client.post(
        "/api/integrations/admin/backend-connections", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 409 and r.json()["error"] == "configuration_error", r.text
    assert "appType" in r.json()["message"] and calls == []


def test_a_pointclickcare_bulk_app_signs_in_no_patient(make_app: Callable[..., AppHandle]) -> None:
    """A bulk data app starts no patient or user launch: refused (409 naming appType) before any EHR call; the same
    config makes a backend connection (it reaches the EHR, here answering 503)."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=f"{PCC_HOST}/fhir/R4/t-9")
    practice = {
        "ehrIntegrations": {"enabledProviders": ["pcc"], "providerConfigs": {"pcc": {**PCC, "appType": "bulk"}}}
    }
    h.bootstrap("t1", practice)
    r = h.client.get("/api/integrations/smart/login", params={"tenant": "t1", "provider": "pcc"})
    assert r.status_code == 409 and "appType 'bulk'" in r.json()["message"], r.text
    assert calls == []
    with pytest.raises(ServiceError) as unreachable:
        create_backend_connection(h.app.state.ctx, "t1", "pcc", "system/Patient.read", "admin")
    assert unreachable.value.code != "configuration_error" and calls  # past the app-type check, at the EHR


@pytest.mark.parametrize(("app_type", "prefix"), [(None, "user/"), ("provider", "user/"), ("patient", "patient/")])
def test_a_pointclickcare_launch_asks_the_scopes_of_its_app_type(
    make_app: Callable[..., AppHandle], app_type: str | None, prefix: str
) -> None:
    """vendors.md §5: a provider-facing PointClickCare app (the default app type) launches with user/ scopes, a
    patient-facing one with patient/ scopes; provider apps used to ask patient-style scopes."""
    h = make_app(http=_refusing_transport([]), SMART_ISSUER_ALLOWLIST=f"{PCC_HOST}/fhir/R4/t-9")
    config = {**PCC, **({"appType": app_type} if app_type else {})}
    h.bootstrap("t1", {"ehrIntegrations": {"enabledProviders": ["pcc"], "providerConfigs": {"pcc": config}}})
    ctx = h.app.state.ctx
    with ctx.db.session() as session:
        scopes = resolve_profile(session, ctx.cipher, ctx.settings, "t1", "pcc").scopes.split()
    resource_scopes = [s for s in scopes if "/" in s and not s.startswith("launch/")]
    assert resource_scopes and all(s.startswith(prefix) for s in resource_scopes), scopes


def test_sal_v1_vendor_launch_keeps_its_read_scopes_with_writes_off(make_app: Callable[..., AppHandle]) -> None:
    """A SMART v1 vendor's default launch scopes (Oracle Health: ``patient/Observation.read``) survive the filter that
    drops write scopes while writes are off: ``.read`` was taken for a write scope (its ``d``), so a v1 launch
    asked for no resource scope at all."""
    h = make_app(http=_refusing_transport([]), SMART_ISSUER_ALLOWLIST=f"https://fhir-ehr.cerner.com/r4/{TENANT}")
    h.bootstrap("t1", {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}})
    ctx = h.app.state.ctx
    with ctx.db.session() as session:
        scopes = resolve_profile(session, ctx.cipher, ctx.settings, "t1", "cerner").scopes.split()
    assert "patient/Observation.read" in scopes and "patient/Patient.read" in scopes
    assert not any(s.endswith(".write") for s in scopes)


def _smart_config_transport(base: str) -> httpx.Client:
    """An EHR whose discovery answers (SMART v1 only, as PointClickCare's US Core 3.1.1 era server)."""
    config = {
        "issuer": base,
        "authorization_endpoint": f"{PCC_HOST}/oauth/authorize",
        "token_endpoint": f"{PCC_HOST}/oauth/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "capabilities": ["launch-ehr", "launch-standalone", "client-confidential-symmetric", "permission-v1"],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(200, json=config)
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("app_type", [None, "patient"])
def test_sal07_a_pointclickcare_standalone_launch_asks_no_ehr_launch_scope(
    make_app: Callable[..., AppHandle], app_type: str | None
) -> None:
    """SAL-07: a standalone launch asks ``launch/patient`` and no ``launch`` (that scope is the EHR launch's, with its
    ``launch`` parameter). A provider-facing PointClickCare app (the default app type, ``user/`` scopes) asked both,
    so its standalone authorize URL carried an EHR-launch scope with no launch; an EHR launch asks ``launch``."""
    from urllib.parse import parse_qs, urlsplit

    from auth_service.services.launch import begin_authorization

    base = f"{PCC_HOST}/fhir/R4/t-9"
    h = make_app(http=_smart_config_transport(base), SMART_ISSUER_ALLOWLIST=base)
    config = {**PCC, **({"appType": app_type} if app_type else {})}
    h.bootstrap("t1", {"ehrIntegrations": {"enabledProviders": ["pcc"], "providerConfigs": {"pcc": config}}})
    ctx = h.app.state.ctx

    def scope(launch: str | None) -> list[str]:
        url = begin_authorization(ctx, tenant_id="t1", provider_id="pcc", browser_session="b" * 32, launch=launch)
        return parse_qs(urlsplit(url).query)["scope"][0].split()

    standalone, ehr = scope(None), scope("opaque-launch")
    prefix = "patient/" if app_type == "patient" else "user/"
    assert "launch/patient" in standalone and "launch" not in standalone, standalone
    assert "launch" in ehr and not any(s.startswith("launch/") for s in ehr), ehr
    assert "user/Observation.read" in standalone or prefix == "patient/"
    assert all(s.startswith(prefix) for s in standalone if s.endswith(".read")), standalone


def test_sal23_backend_connection_answers_the_expiry_it_stored(make_app: Callable[..., AppHandle]) -> None:
    """SAL-23 / vendors.md §3: Oracle Health's tokens last 570 s whatever ``expires_in`` claims, so the stored expiry
    is capped there; the backend connection's answer said the claimed hour while the status API and the refresh
    said 570 s. Both now give the expiry ehrsync refreshes by."""
    import datetime as dt

    base, config = ORACLE_BASE, dict(ORACLE_V1_BACKEND_CONFIG)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(200, json=config)
        if request.url.path == "/token":
            token = {"access_token": "AT", "token_type": "Bearer", "expires_in": 3600, "scope": "system/Patient.read"}
            return httpx.Response(200, json=token)
        return httpx.Response(404)

    h = make_app(http=httpx.Client(transport=httpx.MockTransport(handler)), SMART_ISSUER_ALLOWLIST=base)
    key = h.bootstrap(
        "t1", {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    )
    headers = {"Authorization": f"Bearer {key}"}
    body = {"provider": "cerner", "scope": "system/Patient.read", "group_id": "g-1"}
    made = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
    assert made.status_code == 201, made.text
    status = h.client.get(
        "/api/integrations/smart/status", params={"connection_id": made.json()["connection_id"]}, headers=headers
    ).json()
    token = status["token"]
    assert made.json()["expires_at"] == token["expires_at"]
    lifetime = dt.datetime.fromisoformat(token["expires_at"]) - dt.datetime.fromisoformat(token["issued_at"])
    assert lifetime == dt.timedelta(seconds=570)


@pytest.mark.parametrize(
    ("practice", "error", "status"),
    [
        (
            {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}},
            "not_found",
            404,
        ),
        (
            {"ehrIntegrations": {"enabledProviders": [], "providerConfigs": {"epic": {"clientId": "c"}}}},
            "provider_disabled",
            409,
        ),
        (
            {"ehrIntegrations": {"enabledProviders": ["epic"], "providerConfigs": {"epic": {"clientId": "c"}}}},
            "configuration_error",
            409,
        ),
    ],
    ids=["no-epic-config", "epic-not-enabled", "epic-without-a-fhir-base"],
)
def test_a_backend_connection_to_a_provider_not_configured_says_so_before_asking_for_a_group(
    make_app: Callable[..., AppHandle], practice: dict[str, object], error: str, status: int
) -> None:
    """Epic exports only at Group level, but on a tenant where Epic is not configured (no config, not enabled, or
    incomplete) that is the root cause the admin is told first, not a missing ``group_id``: before, the API asked
    for ``group_id``, and only once given said Epic was not configured. Nothing is sent to any EHR."""
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls))
    key = h.bootstrap("t1", practice)
    body = {"provider": "epic", "scope": "system/Patient.read"}
    r = h.client.post(
        "/api/integrations/admin/backend-connections", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    answer = r.json()
    assert r.status_code == status and "group_id" not in answer["message"], r.text
    assert "'epic'" in answer["message"] and answer["error"] == error, r.text
    with_group = h.client.post(
        "/api/integrations/admin/backend-connections",
        json={**body, "group_id": "g-1"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert (with_group.status_code, with_group.json()) == (r.status_code, answer)  # the same answer either way
    assert calls == []
