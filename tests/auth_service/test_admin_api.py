"""Admin API: API keys, tenant isolation, provider configs, connect links, JWKS, error contract."""

from __future__ import annotations

import base64
import json

import pytest

from auth_service.core.keys import SigningKey, load_private_key, public_jwk
from store import TokenCipher, load_provider_config, rotate_keys
from store.crypto import derive_kid
from tests.auth_service.keyutil import ec_pem, rsa_pem
from tests.auth_service.practice import SMART


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_needs_api_key(make_app) -> None:
    h = make_app()
    r = h.client.get("/api/integrations/admin/providers")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = h.client.get("/api/integrations/admin/providers", headers={"X-API-Key": "ehs_nope"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_x_api_key_and_bearer_both_work(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    assert h.client.get("/api/integrations/admin/providers", headers={"X-API-Key": key}).status_code == 200
    assert h.client.get("/api/integrations/admin/providers", headers=auth(key)).status_code == 200


def test_provider_crud_and_secret_never_echoed(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put(
        "/api/integrations/admin/providers/smart",
        headers=auth(key),
        json={"client_id": "app", "client_secret": "s3cret-value"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["config"]["client_secret"] == {"set": True}
    assert "s3cret-value" not in r.text
    got = h.client.get("/api/integrations/admin/providers/smart", headers=auth(key))
    assert "s3cret-value" not in got.text
    # stored sealed, not in clear
    ctx = h.app.state.ctx
    with ctx.db.session() as s:
        from store.models import ProviderConfig

        row = s.query(ProviderConfig).one()
        assert "s3cret-value" not in json.dumps(row.config)
    assert h.client.post("/api/integrations/admin/providers/smart/enable", headers=auth(key)).json()["enabled"]
    assert not h.client.post("/api/integrations/admin/providers/smart/disable", headers=auth(key)).json()["enabled"]
    assert h.client.delete("/api/integrations/admin/providers/smart", headers=auth(key)).status_code == 204
    r = h.client.get("/api/integrations/admin/providers/smart", headers=auth(key))
    assert r.status_code == 200 and r.json()["source"] == "tenant_settings"  # the smartFhir settings again
    assert "client_secret" not in r.json()["config"]
    r = h.client.delete("/api/integrations/admin/providers/smart", headers=auth(key))
    assert r.status_code == 404 and "smartFhir" in r.json()["message"]
    actions = [e["action"] for e in h.client.get("/api/integrations/admin/audit", headers=auth(key)).json()]
    for expected in ("provider.create", "provider.enable", "provider.disable", "provider.delete"):
        assert expected in actions
    assert "s3cret-value" not in h.client.get("/api/integrations/admin/audit", headers=auth(key)).text


def test_cross_tenant_access_denied(make_app) -> None:
    h = make_app()
    key1 = h.bootstrap("t1", SMART)
    key2 = h.bootstrap("t2", SMART)
    h.client.put("/api/integrations/admin/providers/smart", headers=auth(key1), json={"client_id": "a"})
    # t2 sees only its own smartFhir server, never t1's provider config
    own = h.client.get("/api/integrations/admin/providers/smart", headers=auth(key2)).json()
    assert own["source"] == "tenant_settings" and own["config"]["clientId"] == "app"
    assert [p["source"] for p in h.client.get("/api/integrations/admin/providers", headers=auth(key2)).json()] == [
        "tenant_settings"
    ]
    assert h.client.delete("/api/integrations/admin/providers/smart", headers=auth(key2)).status_code == 404
    events = h.client.get("/api/integrations/admin/audit", headers=auth(key2)).json()
    assert all(e["action"] != "provider.create" for e in events)
    r = h.client.get("/api/integrations/smart/status", headers=auth(key2))
    assert r.status_code == 404 and r.json()["error"] == "not_connected"


def test_a_tenant_cannot_store_a_sealed_looking_member_that_stops_every_tenants_key_rotation(make_app) -> None:
    """A provider config member shaped like a sealed secret (``{"$enc": ...}``) is the store's own format: read back,
    it is opened. Accepted from one tenant's admin (``smart`` has no vendor schema), one that does not open made the
    key rotation fail for every tenant (``rotate_keys`` re-seals all provider configs in one transaction: none was
    re-sealed, so the old key could never go). It is refused now (422 naming the member), and the rotation re-seals
    the other tenant's secret."""
    h = make_app()
    key1, key2 = h.bootstrap("t1", SMART), h.bootstrap("t2", SMART)
    ctx = h.app.state.ctx
    old_key = base64.b64decode(h.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value())
    own = {"client_id": "app", "client_secret": "t1-secret"}
    assert h.client.put("/api/integrations/admin/providers/smart", headers=auth(key1), json=own).status_code == 200
    for forged in ({"$enc": f"v1.{derive_kid(old_key)}.AAAA"}, {"$enc": 5}, {"$enc": "x", "more": 1}):
        r = h.client.put(
            "/api/integrations/admin/providers/smart", headers=auth(key2), json={"client_id": "b", "note": forged}
        )
        assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
        assert [f["field"] for f in r.json()["fields"]] == ["note"]
    new_key = base64.b64encode(bytes(range(1, 33))).decode()
    both = TokenCipher.from_env(
        {
            "INTEGRATIONS_TOKEN_ENC_KEY": new_key,
            "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"{derive_kid(old_key)}:{base64.b64encode(old_key).decode()}",
        }
    )
    rotate_keys(ctx.db, both)
    with ctx.db.session() as session:  # t1's secret opens under the new key alone
        opened = load_provider_config(session, TokenCipher(bytes(range(1, 33))), "t1", "smart")
        assert opened["client_secret"] == "t1-secret"


def test_unknown_provider_and_bad_body(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1")
    r = h.client.put("/api/integrations/admin/providers/nosuchvendor", headers=auth(key), json={})
    assert r.status_code == 404
    r = h.client.put("/api/integrations/admin/providers/smart", headers=auth(key), content=b"[1,2]")
    assert r.status_code == 422 and r.json()["error"] == "validation_error" and r.json()["fields"]


def test_connect_link_is_signed_and_expiring(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.post(
        "/api/integrations/connect-links", headers=auth(key), json={"user_ref": "u-42", "ttl_seconds": 60}
    )
    assert r.status_code == 201
    url = r.json()["url"]
    assert url.startswith("http://testserver/connect?link=")
    page = h.client.get(url.removeprefix("http://testserver"))
    assert page.status_code == 200 and "Connect your health record" in page.text
    path = url.removeprefix("http://testserver")
    at = len(path) - 10  # inside the sealed token's tag: a whole base64 character (the last ones carry unused bits,
    tampered = path[:at] + ("B" if path[at] == "A" else "A") + path[at + 1 :]  # and "xx" could even be theirs)
    bad = h.client.get(tampered)
    assert bad.status_code == 400 and "invalid_link" in bad.text
    r = h.client.post("/api/integrations/connect-links", headers=auth(key), json={"user_ref": ""})
    assert r.status_code == 422


def test_jwks_sal30_with_rotation(make_app) -> None:
    old = SigningKey(load_private_key(rsa_pem()), "old-kid")
    h = make_app(
        EHR_JWT_PRIVATE_KEY=ec_pem(),
        EHR_JWT_KEY_ID="new-kid",
        EHR_JWT_PREVIOUS_PUBLIC_KEYS=json.dumps([public_jwk(old.key, "old-kid")]),
    )
    r = h.client.get("/api/integrations/ehr/jwks")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=300"
    keys = r.json()["keys"]
    assert [k["kid"] for k in keys] == ["new-kid", "old-kid"]
    assert keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-384" and keys[0]["alg"] == "ES384"
    assert keys[1]["kty"] == "RSA" and keys[1]["alg"] == "RS384"
    for k in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k)
    # the EC coordinates are 48 bytes each
    assert len(base64.urlsafe_b64decode(keys[0]["x"] + "==")) == 48


def test_health_and_openapi(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    assert h.client.get("/api/integrations/admin/health", headers=auth(key)).json()["status"] == "ok"
    spec = h.client.get("/openapi.json").json()
    assert "/api/integrations/smart/callback" in spec["paths"]
    assert "/api/integrations/admin/providers/{provider_id}" in spec["paths"]


@pytest.mark.postgres
def test_admin_on_postgres(make_app, postgres_url) -> None:
    h = make_app(DATABASE_URL=postgres_url)
    key1 = h.bootstrap("t1", SMART)
    key2 = h.bootstrap("t2", SMART)
    assert (
        h.client.put("/api/integrations/admin/providers/smart", headers=auth(key1), json={"client_id": "a"}).status_code
        == 200
    )
    assert h.client.get("/api/integrations/admin/providers/smart", headers=auth(key2)).json()["source"] == (
        "tenant_settings"
    )
    assert h.client.get("/api/integrations/admin/providers/smart", headers=auth(key1)).json()["source"] == (
        "provider_config"
    )


def test_provider_config_validated_by_plugin_schema(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1")
    r = h.client.put(
        "/api/integrations/admin/providers/epic",
        headers=auth(key),
        json={"fhirBaseUrl": "ftp://epic.example/fhir", "clientId": "", "bogus": 1},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    fields = {f["field"] for f in body["fields"]}
    assert {"fhirBaseUrl", "clientId", "bogus"} <= fields
    r = h.client.put(
        "/api/integrations/admin/providers/epic",
        headers=auth(key),
        json={"fhirBaseUrl": "https://epic.example/api/FHIR/R4", "clientId": "epic-app", "clientSecret": "shh-123"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["field_hints"]["clientSecret"]["secret"] is True
    assert "shh-123" not in r.text
    assert not r.json()["enabled"]  # configured, not yet enabled
    assert h.client.post("/api/integrations/admin/providers/epic/enable", headers=auth(key)).json()["enabled"]
    health = h.client.get("/api/integrations/admin/health", headers=auth(key)).json()
    assert health["providers"] == [{"provider": "epic", "enabled": True, "connections": {}}]


def _add_connection(h, tenant_id: str, provider_id: str, status: str) -> None:
    from store.models import Connection

    with h.app.state.ctx.db.session() as session, session.begin():
        base = SMART["smartFhir"]["fhirBaseUrl"]
        session.add(
            Connection(tenant_id=tenant_id, provider_id=provider_id, fhir_base=base, client_id="a", status=status)
        )


def test_tenant_smart_server_is_listed_and_counted_in_health(make_app) -> None:
    """``smart`` (the tenant's smartFhir server, no provider-config row) is in the providers listing, read-only,
    and health counts its connections: one needing re-authorization makes the tenant degraded."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    listed = h.client.get("/api/integrations/admin/providers", headers=auth(key)).json()
    assert [(p["provider"], p["enabled"], p["source"]) for p in listed] == [("smart", True, "tenant_settings")]
    assert listed[0]["config"] == {
        "fhirBaseUrl": SMART["smartFhir"]["fhirBaseUrl"],
        "issuer": SMART["smartFhir"]["issuer"],
        "clientId": "app",
    }
    assert h.client.get("/api/integrations/admin/providers/smart", headers=auth(key)).json() == listed[0]
    r = h.client.post("/api/integrations/admin/providers/smart/disable", headers=auth(key))
    assert r.status_code == 404 and "practice settings" in r.json()["message"]
    health = h.client.get("/api/integrations/admin/health", headers=auth(key)).json()
    assert health == {
        "tenant": "t1",
        "status": "ok",
        "providers": [{"provider": "smart", "enabled": True, "connections": {}}],
    }
    _add_connection(h, "t1", "smart", "active")
    _add_connection(h, "t1", "smart", "needs_reauth")
    health = h.client.get("/api/integrations/admin/health", headers=auth(key)).json()
    assert health["status"] == "degraded"
    assert health["providers"] == [
        {"provider": "smart", "enabled": True, "connections": {"active": 1, "needs_reauth": 1}}
    ]


def test_health_counts_connections_of_a_provider_no_longer_configured(make_app) -> None:
    """A provider whose config was deleted still has connections: health counts them (enabled false)."""
    h = make_app()
    key = h.bootstrap("t1")
    assert h.client.get("/api/integrations/admin/providers", headers=auth(key)).json() == []
    _add_connection(h, "t1", "epic", "client_rejected")
    health = h.client.get("/api/integrations/admin/health", headers=auth(key)).json()
    assert health["status"] == "degraded"
    assert health["providers"] == [{"provider": "epic", "enabled": False, "connections": {"client_rejected": 1}}]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"clientId": "x" * 5_000_000}, "config"),  # 5 MB: over the config's bound
        ({"clientId": "x" * 9000}, "clientId"),  # longer than any vendor issues
        ({"clientId": "   "}, "clientId"),
        ({"client_id": 42}, "client_id"),
    ],
)
def test_a_smart_config_out_of_bounds_is_refused_naming_the_field(make_app, config, field) -> None:
    """``smart`` (the tenant's own SMART server) has no vendor schema, but a config is still bounded: a 5 MB
    client id, one longer than any vendor issues, blank or not text is a 422 naming the field, and nothing is kept."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put("/api/integrations/admin/providers/smart", headers=auth(key), json=config)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text[:300]
    assert [f["field"] for f in r.json()["fields"]] == [field]
    assert len(r.content) < 10_000  # the refused value is not echoed back
    got = h.client.get("/api/integrations/admin/providers/smart", headers=auth(key))
    assert got.json()["source"] == "tenant_settings"


def test_a_config_with_a_number_that_is_not_finite_is_refused(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    body = b'{"client_id": "app", "token_ttl": NaN}'
    r = h.client.put(
        "/api/integrations/admin/providers/smart",
        headers={**auth(key), "Content-Type": "application/json"},
        content=body,
    )
    assert r.status_code == 422 and "finite" in r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("issuer", "http://["),
        ("issuer", "ehr.example.org/fhir"),
        ("fhirBaseUrl", "ftp://ehr.example.org"),
        ("fhir_base_url", "https://"),
        ("issuer", 5),
        ("fhirBaseUrl", "https://ehr.example.org:port/fhir"),
    ],
)
def test_a_smart_config_naming_a_server_that_is_not_a_url_is_refused_naming_the_field(
    make_app, field: str, value: object
) -> None:
    """``smart`` has no vendor schema, so an issuer or FHIR base that is not a URL was stored, and failed that
    clinic's every launch and sync later (the tenant settings' own ``smartFhir`` URLs were already checked)."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put(
        "/api/integrations/admin/providers/smart", headers=auth(key), json={"client_id": "app", field: value}
    )
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert [f["field"] for f in r.json()["fields"]] == [field]
    empty = h.client.put(
        "/api/integrations/admin/providers/smart", headers=auth(key), json={"client_id": "app", field: ""}
    )
    assert empty.status_code == 422 and "leave it out" in empty.json()["fields"][0]["message"]
    ok = {"client_id": "app", "issuer": "https://ehr.example.org/fhir", "fhirBaseUrl": "http://127.0.0.1:8080/fhir/"}
    assert h.client.put("/api/integrations/admin/providers/smart", headers=auth(key), json=ok).status_code == 200


def test_the_whole_audit_trail_pages_back_by_event_id_and_filters_by_action(make_app) -> None:
    """The audit listing showed the newest 1,000 events at most, so anything older (a busy day, or anonymous sign-in
    starts written into a clinic's trail) was out of reach. A full page now links the next one (``before``, an event
    id), an ``action`` filter finds one kind of event, and another tenant's ids page nothing of this one's."""
    h = make_app()
    key1, key2 = h.bootstrap("t1", SMART), h.bootstrap("t2", SMART)
    own = {"client_id": "app"}
    assert h.client.put("/api/integrations/admin/providers/smart", headers=auth(key1), json=own).status_code == 200
    for _ in range(3):
        assert h.client.post("/api/integrations/admin/providers/smart/disable", headers=auth(key1)).status_code == 200
        assert h.client.post("/api/integrations/admin/providers/smart/enable", headers=auth(key1)).status_code == 200
    everything = h.client.get("/api/integrations/admin/audit", headers=auth(key1), params={"limit": 1000}).json()
    assert (
        len(everything) >= 6 and "Link" not in h.client.get("/api/integrations/admin/audit", headers=auth(key1)).headers
    )

    seen: list[int] = []
    url: str | None = "/api/integrations/admin/audit?limit=4"
    while url:
        page = h.client.get(url, headers=auth(key1))
        assert page.status_code == 200
        seen += [e["id"] for e in page.json()]
        url = page.links.get("next", {}).get("url")
    assert seen == [e["id"] for e in everything]  # every event once, newest first

    disables = h.client.get("/api/integrations/admin/audit", headers=auth(key1), params={"action": "provider.disable"})
    assert [e["action"] for e in disables.json()] == ["provider.disable"] * 3
    older = h.client.get(
        "/api/integrations/admin/audit",
        headers=auth(key1),
        params={"action": "provider.disable", "before": disables.json()[0]["id"], "limit": 1},
    )
    assert [e["id"] for e in older.json()] == [disables.json()[1]["id"]]
    assert 'rel="next"' in older.headers["Link"] and "action=provider.disable" in older.headers["Link"]
    theirs = h.client.get(
        "/api/integrations/admin/audit", headers=auth(key2), params={"before": everything[0]["id"] + 1}
    )
    assert all(e["id"] not in seen for e in theirs.json())
    bad = h.client.get("/api/integrations/admin/audit", headers=auth(key1), params={"before": "0"})
    assert bad.status_code == 422


def test_a_smart_rows_enabled_flag_says_whether_it_signs_patients_in(make_app) -> None:
    """A ``smart`` provider-config row signs patients in while the tenant's ``smartFhir`` is enabled and the row is
    not disabled (``profiles._check_enabled``), whether or not ``smart`` is in ``enabledProviders``. The listing
    read ``enabledProviders`` instead, so a saved row that was never toggled showed ``enabled: false`` while it
    signed patients in, and one under a disabled ``smartFhir`` showed ``true`` while every sign-in was refused."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    saved = h.client.put("/api/integrations/admin/providers/smart", headers=auth(key), json={"client_id": "app"})
    assert saved.status_code == 200 and saved.json()["enabled"] is True
    listed = h.client.get("/api/integrations/admin/providers", headers=auth(key)).json()
    assert [p["enabled"] for p in listed if p["provider"] == "smart"] == [True]
    off = h.client.post("/api/integrations/admin/providers/smart/disable", headers=auth(key))
    assert off.json()["enabled"] is False

    off_key = h.bootstrap("t2", {"smartFhir": {**SMART["smartFhir"], "enabled": False}})
    h.client.put("/api/integrations/admin/providers/smart", headers=auth(off_key), json={"client_id": "app"})
    on = h.client.post("/api/integrations/admin/providers/smart/enable", headers=auth(off_key))
    assert on.status_code == 200 and on.json()["enabled"] is False  # smartFhir is off: no sign-in is served


@pytest.mark.parametrize("value", ["100", 100.0, True], ids=["text", "float", "true"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/integrations/connect-links", "ttl_seconds"),
        ("/api/integrations/admin/providers/smart/reactivate", "limit"),
    ],
)
def test_admin_counts_take_only_a_json_whole_number(make_app, path: str, field: str, value: object) -> None:
    """A connect link's ``ttl_seconds`` and a reactivation's ``limit`` were read laxly (``"100"`` and ``100.0`` as
    100, ``true`` as 1): a count is a JSON whole number, as the retention period is; anything else is 422 naming
    the field, nothing done (no link signed, no connection retried)."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    body: dict[str, object] = {field: value} if field == "limit" else {"user_ref": "u-42", field: value}
    r = h.client.post(path, headers=auth(key), json=body)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert [f["field"] for f in r.json()["fields"]] == [f"body.{field}"]


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("scopes", True),
        ("scopes", 5),
        ("scopes", ["patient/*.rs", 5]),
        ("auth_method", True),
        ("clientSecret", 1e5),
        ("kid", 7),
        ("displayName", False),
    ],
)
def test_a_smart_config_member_read_as_text_must_be_text(make_app, member: str, value: object) -> None:
    """``smart`` has no vendor schema and its members were read with ``str()``: ``{"scopes": true}`` asked the EHR
    for the scope ``True`` at every sign-in, ``{"clientSecret": 1e5}`` authenticated with ``100000.0``. Each is now
    422 naming the member, and the config is not stored."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put(
        "/api/integrations/admin/providers/smart", headers=auth(key), json={"client_id": "app", member: value}
    )
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert [f["field"] for f in r.json()["fields"]] == [member]
    got = h.client.get("/api/integrations/admin/providers/smart", headers=auth(key))
    assert got.json()["source"] == "tenant_settings"


@pytest.mark.parametrize(
    ("member", "value", "says"),
    [
        ("scopes", ["patient/*.rs", 5], "must be text or a list of text, not a list whose item 1 is a JSON number"),
        ("scopes", {"a": "b"}, "must be text or a list of text, not a JSON object"),
        ("auth_method", True, "must be text, not JSON true"),
        ("clientSecret", 1e5, "must be text, not a JSON number"),
        ("kid", ["k1"], "must be text, not a JSON array"),
    ],
)
def test_a_smart_config_member_not_text_is_named_in_json_words(make_app, member: str, value: object, says: str) -> None:
    """The 422 says what the member is in JSON's words: a list of scopes with a number in it was told "(a JSON list
    is not)", as though a list were refused, and a JSON object or true was named by its Python type (dict, bool)."""
    h = make_app()
    key = h.bootstrap("t1", SMART)
    r = h.client.put(
        "/api/integrations/admin/providers/smart", headers=auth(key), json={"client_id": "app", member: value}
    )
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [{"field": member, "message": says}]
