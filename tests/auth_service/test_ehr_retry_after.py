"""The EHR's own ``Retry-After`` is passed on, over real sockets (the sandbox as EHR, a live auth service).

When the EHR answers a call of the auth service with 429 or 503 carrying ``Retry-After`` (delta-seconds or an
HTTP-date, RFC 9110 §10.2.3), the ``503 ehr_unavailable`` answer carries it too: ``Retry-After`` (whole seconds, at
least 1, at most an hour) and ``retryAfterSeconds``, on the admin's JSON answers and on the patient's error page, as
it already does when eCW's call budget is busy. The sandbox's 429/503 faults send the header.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx

from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_admin_refresh import REFRESH, _unique
from tests.auth_service.test_backend_keys import _create_backend
from tests.auth_service.test_callback_reload import callback_url, connections
from tests.auth_service.test_flows_sandbox import connect, register

WELL_KNOWN = "/fhir/.well-known/smart-configuration"
HTML = {"Accept": "text/html"}


def _fault(sandbox: Any, kind: str, path: str, retry_after: str) -> None:
    sandbox_admin(sandbox, "faults", {"kind": kind, "path": path, "times": None, "retry_after": retry_after})


def _http_date(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


def _assert_retry_after(r: httpx.Response, low: int, high: int) -> None:
    """503 ``ehr_unavailable`` whose ``Retry-After`` (and ``retryAfterSeconds``) is within [low, high]."""
    assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
    assert low <= int(r.headers["Retry-After"]) <= high, r.headers
    assert r.json()["retryAfterSeconds"] == int(r.headers["Retry-After"])


def test_admin_refresh_passes_on_the_token_endpoints_retry_after_in_seconds(make_settings: Any, sandbox: Any) -> None:
    client = _unique("refresh-retry-after")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        conn_id = _create_backend(svc, sandbox, client).json()["connection_id"]
        _fault(sandbox, "503", "/oauth/token", "120")
        r = svc.admin("POST", REFRESH, json={"connection_id": conn_id})
        _assert_retry_after(r, 120, 120)
        assert "refresh was not done" in r.json()["message"]


def test_backend_creation_passes_on_a_retry_after_given_as_an_http_date(make_settings: Any, sandbox: Any) -> None:
    """429 with ``Retry-After: <HTTP-date five minutes ahead>``: the answer says about 300 s, in seconds."""
    client = _unique("create-retry-after")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        _fault(sandbox, "429", "/oauth/token", _http_date(300))
        r = _create_backend(svc, sandbox, client)
        _assert_retry_after(r, 240, 301)  # the date's whole seconds, less the time the request took


def test_provider_test_passes_on_the_discovery_answers_retry_after(make_settings: Any, sandbox: Any) -> None:
    """The smart-configuration answering 503 with ``Retry-After: 90`` is an outage with a time to come back (the
    discovery step's ``retryAfterSeconds`` and the answer's), not a missing SMART configuration."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, _unique("probe"))) as svc:
        _fault(sandbox, "503", WELL_KNOWN, "90")
        r = svc.admin("POST", "/api/integrations/admin/providers/smart/test")
        _assert_retry_after(r, 90, 90)
        assert r.json()["discovery"] == {**r.json()["discovery"], "error": "ehr_unavailable", "retryAfterSeconds": 90}


def test_a_discovery_429_is_an_outage_with_retry_after_not_a_v1_fallback(make_settings: Any, sandbox: Any) -> None:
    """A throttled smart-configuration (429) says nothing about the server's SMART support: the answer is
    ``ehr_unavailable`` with the EHR's time to come back, not a discovery failure or the /metadata fallback."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, _unique("probe-429"))) as svc:
        _fault(sandbox, "429", WELL_KNOWN, _http_date(200))
        r = svc.admin("POST", "/api/integrations/admin/providers/smart/test")
        _assert_retry_after(r, 140, 201)


def test_a_huge_retry_after_is_passed_on_clamped_to_an_hour(make_settings: Any, sandbox: Any) -> None:
    """The test read's FHIR answer (503, ``Retry-After: 86400``) after the one short retry: told to come back in an
    hour at most."""
    pid = patient_ids(sandbox)[0]
    client = _unique("read-retry-after")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        conn_id = connect(sandbox, svc, client, pid)
        _fault(sandbox, "503", "/fhir/Patient", "86400")
        r = svc.admin("GET", "/api/integrations/smart/test/patient", params={"connection_id": conn_id})
        _assert_retry_after(r, 3600, 3600)


def test_the_patients_error_page_carries_the_ehrs_retry_after(make_settings: Any, sandbox: Any) -> None:
    """The patient's browser gets the error page (503) with ``Retry-After``: from the login's discovery (seconds) and
    from the callback's code exchange (an HTTP-date)."""
    pid = patient_ids(sandbox)[0]
    client = _unique("page-retry-after")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        _fault(sandbox, "503", WELL_KNOWN, "45")
        login = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart"
        page = httpx.get(login, headers=HTML, timeout=30)
        assert (page.status_code, page.headers["Retry-After"]) == (503, "45"), page.text[:300]
        assert "text/html" in page.headers["content-type"] and "ehr_unavailable" in page.text
        sandbox_admin(sandbox, "faults", method="DELETE")

        sandbox_admin(sandbox, "preapprove", {"client_id": client, "patient_id": pid})
        _fault(sandbox, "429", "/oauth/token", _http_date(600))
        callback = authorize_headless(svc, login, headers=HTML)
        assert callback.status_code == 503 and "text/html" in callback.headers["content-type"], callback.text[:300]
        assert 540 <= int(callback.headers["Retry-After"]) <= 601, callback.headers


def test_a_reload_of_the_callback_keeps_the_ehrs_retry_after(make_settings: Any, sandbox: Any) -> None:
    """The patient reloads the callback whose code exchange was throttled (429, ``Retry-After: 120``): the reload is
    answered from the first request's recorded error (no second exchange), and it still says when to come back,
    counting down to the time the first answer gave (at least 1 s), on the page and the JSON alike."""
    pid = patient_ids(sandbox)[0]
    client = _unique("reload-retry-after")
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": client, "patient_id": pid})
        with httpx.Client(timeout=30, headers=HTML) as browser:
            url = callback_url(svc, browser)
            _fault(sandbox, "429", "/oauth/token", "120")
            first = browser.get(url)
            assert (first.status_code, first.headers["Retry-After"]) == (503, "120"), first.text[:300]
            sandbox_admin(sandbox, "faults", method="DELETE")  # a second exchange now would connect: none is made
            again = browser.get(url)
            assert again.status_code == 503 and "ehr_unavailable" in again.text, again.text[:300]
            assert 1 <= int(again.headers["Retry-After"]) <= 120, again.headers
            api = browser.get(url, headers={"Accept": "application/json"})
            _assert_retry_after(api, 1, 120)
            assert api.json()["retryAfterSeconds"] <= int(again.headers["Retry-After"])
        assert connections(svc) == 0
