"""The connect page's directory over HTTP: a tenant loads a brands bundle of a few hundred brands, and a
patient finds their health system by name without JavaScript (GET search form, ranked server-side)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.auth_service.brands_data import brands_bundle
from tests.auth_service.conftest import NoNetwork
from tests.auth_service.practice import ISSUER, SMART

APP = "https://app.clinic.example"
PRACTICE: dict[str, Any] = {**SMART, "allowedReturnOrigins": [APP]}


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _setup(make_app: Any, count: int = 300) -> tuple[Any, str, str]:
    h = make_app()
    key = h.bootstrap("t1", PRACTICE)
    body = json.dumps(brands_bundle(count, ISSUER))
    r = h.client.put("/api/integrations/admin/brands/vendor-a", headers=auth(key), content=body)
    assert r.status_code == 200, r.text
    link = h.client.post("/api/integrations/connect-links", headers=auth(key), json={"user_ref": "host-user-7"})
    token = parse_qs(urlsplit(link.json()["url"]).query)["link"][0]
    return h, key, token


def _choices(html: str) -> list[str]:
    return re.findall(r'<span class="system-name">([^<]*)</span>', html)


def test_load_list_and_delete_a_brands_directory(make_app) -> None:
    h, key, _ = _setup(make_app)
    listed = h.client.get("/api/integrations/admin/brands", headers=auth(key)).json()
    assert listed == [
        {
            "source": "vendor-a",
            "brands": 300,
            "reachable": 151,  # the three named brands and 148 of the generated ones use the tenant's FHIR base
            "bundle_timestamp": "2026-11-30T12:00:00Z",
            "loaded_at": listed[0]["loaded_at"],
        }
    ]
    assert h.client.delete("/api/integrations/admin/brands/vendor-a", headers=auth(key)).status_code == 204
    assert h.client.get("/api/integrations/admin/brands", headers=auth(key)).json() == []
    assert h.client.delete("/api/integrations/admin/brands/vendor-a", headers=auth(key)).status_code == 404
    assert h.client.get("/api/integrations/admin/brands").status_code == 401


def test_a_bad_bundle_is_refused_naming_the_entry_and_nothing_changes(make_app) -> None:
    h, key, _ = _setup(make_app, count=10)
    bad = brands_bundle(10, ISSUER)
    del bad["entry"][5]["resource"]["name"]
    r = h.client.put("/api/integrations/admin/brands/vendor-a", headers=auth(key), content=json.dumps(bad))
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert "entry 5 (Organization/org-3): Organization.name is missing" in r.json()["message"]
    r = h.client.put("/api/integrations/admin/brands/vendor-a", headers=auth(key), content=b"{not json")
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    assert h.client.get("/api/integrations/admin/brands", headers=auth(key)).json()[0]["brands"] == 10


def test_search_without_javascript_is_ranked_and_accent_insensitive(make_app) -> None:
    h, _, token = _setup(make_app)
    page = h.client.get("/connect", params={"link": token})
    assert page.status_code == 200
    assert _choices(page.text) == []  # 151 to choose from: the patient types first
    assert "Type the name of your health system" in page.text and 'role="status"' in page.text
    # the box holds no more than the route accepts: a longer search without JavaScript would be an error page
    assert 'name="q" value="" maxlength="200"' in page.text
    assert h.client.get("/connect", params={"link": token, "q": "x" * 201}).status_code == 422
    page = h.client.get("/connect", params={"link": token, "q": "zurich"})
    assert _choices(page.text)[0] == "Zürich Kinderspital"
    page = h.client.get("/connect", params={"link": token, "q": "MARY"})
    assert _choices(page.text) == ["St. Mary&#39;s Medical Center"]
    assert "checked" in page.text  # a single match is preselected
    page = h.client.get("/connect", params={"link": token, "q": "st mary"})
    assert _choices(page.text) == ["St. Mary&#39;s Medical Center"]
    page = h.client.get("/connect", params={"link": token, "q": "mychart"})  # every portal's name
    assert len(_choices(page.text)) == 25
    assert "151 health systems match “mychart”. Showing the first 25: type more to narrow the list." in page.text
    page = h.client.get("/connect", params={"link": token, "q": "elsewhere nothing"})
    assert _choices(page.text) == [] and "No health system matches" in page.text
    fragment = h.client.get("/connect/results", params={"link": token, "q": "good"})
    assert fragment.status_code == 200 and _choices(fragment.text) == ["Good Health"]
    assert 'data-status="1 health system match' in fragment.text


def test_unreachable_brands_are_not_offered_and_a_provider_without_brands_is(make_app) -> None:
    h, key, token = _setup(make_app)
    page = h.client.get("/connect", params={"link": token, "q": "river"})
    shown = _choices(page.text)
    assert shown and all(int(n.rsplit(" ", 1)[1]) % 2 == 0 for n in shown)  # odd ones use another EHR
    smaller = json.dumps(brands_bundle(3, ISSUER))  # loading the source again replaces it, cache included
    assert (
        h.client.put("/api/integrations/admin/brands/vendor-a", headers=auth(key), content=smaller).status_code == 200
    )
    assert _choices(h.client.get("/connect", params={"link": token, "q": "river"}).text) == []
    assert len(_choices(h.client.get("/connect", params={"link": token}).text)) == 3
    h.client.delete("/api/integrations/admin/brands/vendor-a", headers=auth(key))
    page = h.client.get("/connect", params={"link": token})
    assert _choices(page.text) == ["Your health system (SMART on FHIR)"]


def test_connect_link_hides_the_user_ref_and_return_to_must_be_allowed(make_app) -> None:
    h, key, token = _setup(make_app, count=3)
    assert token.startswith("v1.") and "host-user-7" not in token
    for probe in (token, token.split(".")[2]):
        padded = probe + "=" * (-len(probe) % 4)
        assert b"host-user-7" not in padded.encode()
    ok = h.client.post(
        "/api/integrations/connect-links", headers=auth(key), json={"user_ref": "u", "return_to": f"{APP}/chart?x=1"}
    )
    assert ok.status_code == 201
    for bad in (
        "https://evil.example/",
        "javascript:alert(1)",
        f"{APP}.evil.example/",
        "//evil.example",
        "http://app.clinic.example/",
    ):
        r = h.client.post(
            "/api/integrations/connect-links", headers=auth(key), json={"user_ref": "u", "return_to": bad}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_redirect", bad


def test_legacy_signed_links_still_open_until_they_expire(make_app) -> None:
    h, _, _ = _setup(make_app, count=3)
    legacy = h.app.state.ctx.links._legacy.sign("t1", "old-user", ttl_seconds=60)
    assert h.client.get("/connect", params={"link": legacy}).status_code == 200
    expired = h.app.state.ctx.links._legacy.sign("t1", "old-user", ttl_seconds=60, now=0)
    page = h.client.get("/connect", params={"link": expired})
    assert page.status_code == 400 and "expired or is not valid" in page.text


def test_picking_an_unknown_choice_or_none_is_a_clear_error(make_app) -> None:
    h, _, token = _setup(make_app, count=3)
    r = h.client.get("/api/integrations/smart/login", params={"link": token, "choice": "b-nope"})
    assert r.status_code == 400 and "no longer offered" in r.json()["message"]
    r = h.client.get("/api/integrations/smart/login", params={"link": token}, headers={"Accept": "text/html"})
    assert r.status_code == 400 and "Try again" not in r.text  # this browser never opened the link: no restart
    h.client.get("/connect", params={"link": token})  # as the patient does: the connect page, then sign in
    r = h.client.get("/api/integrations/smart/login", params={"link": token}, headers={"Accept": "text/html"})
    assert r.status_code == 400 and "Try again" in r.text and 'href="/connect/restart"' in r.text


def test_restart_goes_back_to_the_start_with_the_link_this_browser_opened(make_app) -> None:
    h, _, token = _setup(make_app, count=3)
    r = h.client.get("/connect/restart")
    assert r.status_code == 400 and "expired or is not valid" in r.text and "/connect/restart" not in r.text
    h.client.get("/connect", params={"link": token})
    r = h.client.get("/connect/restart")
    assert r.status_code == 303 and parse_qs(urlsplit(r.headers["location"]).query)["link"] == [token]


def test_pages_send_a_csp_that_allows_only_own_scripts(make_app) -> None:
    h, _, token = _setup(make_app, count=3)
    page = h.client.get("/connect", params={"link": token})
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-eval" not in csp
    script = h.client.get("/connect/assets/directory.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


def test_a_bundle_nested_past_the_parser_limit_is_refused_saying_so(make_app) -> None:
    h, key, _ = _setup(make_app, count=3)
    body = "[" * 100_000 + "]" * 100_000
    r = h.client.put("/api/integrations/admin/brands/deep", headers=auth(key), content=body)
    assert r.status_code == 422 and "nested too deeply" in r.json()["message"]


@pytest.mark.parametrize("user_ref", ["u" * 200, "é" * 200, "\U0001f600" * 200])
def test_every_link_the_api_issues_opens_the_connect_page_and_signs_in(make_app, user_ref: str) -> None:
    """The longest link the API hands out (user_ref at its 200-character limit, in any script, with the longest
    return_to) opens the connect page and starts the sign-in: the pages take what the issuer makes."""
    h = make_app(http=httpx.Client(transport=NoNetwork()))
    key = h.bootstrap("t1", {**SMART, "allowedReturnOrigins": ["https://app.example"]})
    return_to = "https://app.example/" + "p" * 480
    made = h.client.post(
        "/api/integrations/connect-links", headers=auth(key), json={"user_ref": user_ref, "return_to": return_to}
    )
    assert made.status_code == 201
    token = parse_qs(urlsplit(made.json()["url"]).query)["link"][0]
    page = h.client.get(made.json()["url"], headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Connect your health record" in page.text
    login = h.client.get("/api/integrations/smart/login", params={"link": token, "provider": "smart"})
    assert login.status_code == 503 and login.json()["error"] == "ehr_unavailable"  # past the link: the EHR is next


def test_a_service_on_https_tells_browsers_to_stay_on_https(make_app) -> None:
    """HSTS on every answer of a service whose public URL is https (a first visit by http cannot be downgraded
    again); none on a plain-http development service, where it would lock the browser out of it."""
    secure = make_app(APP_BASE_URL="https://auth.clinic.example")
    for path in ("/connect?link=x", "/healthz", "/api/integrations/smart/callback?state=s&code=c"):
        r = secure.client.get(path, headers={"Accept": "text/html"})
        assert r.headers["strict-transport-security"] == "max-age=31536000", path
    plain = make_app()
    assert "strict-transport-security" not in plain.client.get("/connect?link=x").headers
