"""A bug anywhere in the auth service (an exception no handler knows) still answers the contract.

Before, Starlette answered it with a bare ``text/plain`` "Internal Server Error", without the security headers
(the middleware that sets them never saw a response), so an API caller got no ``error`` code and a patient's
browser a blank page. Now it is ``internal_error`` (500): JSON for API callers, the plain-words error page for
a patient's page, logged once with its traceback, redacted (SAL-38). Over the real service (uvicorn); the error
is raised at a real seam because, by definition, nothing in the real flows raises it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import auth_service.api.routes.pages as pages_routes
import auth_service.services.provider_admin as provider_admin
from tests.auth_service.ehr import running_service, smart_practice
from tests.auth_service.logcapture import capture_all_logs

SECRET = "refresh_token=rt-very-secret-value"


class InjectedBugError(RuntimeError):
    """The unexpected error: no handler knows it."""


def _raise(*_: Any, **__: Any) -> Any:
    raise InjectedBugError(f"failed while holding {SECRET}")


def test_an_api_route_that_hits_a_bug_answers_internal_error_as_json(
    make_settings: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_admin, "health", _raise)
    with running_service(make_settings, sandbox, smart_practice(sandbox, "c-bug")) as svc:
        with capture_all_logs() as logs:
            r = svc.admin("GET", "/api/integrations/admin/health")
        assert r.status_code == 500, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {
            "error": "internal_error",
            "message": "an unexpected error stopped this request; the service logged it",
        }
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        assert svc.admin("GET", "/healthz").json() == {"status": "ok"}, "the service keeps serving"
    text = logs.text
    assert "unexpected InjectedBugError on GET /api/integrations/admin/health" in text
    assert "Traceback" in text, "whoever fixes the bug gets the traceback"
    assert "rt-very-secret-value" not in text, "the exception's message is redacted like every record (SAL-38)"


def test_a_patient_page_that_hits_a_bug_shows_the_error_page(
    make_settings: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_routes, "_session_connection", _raise)
    with running_service(make_settings, sandbox, smart_practice(sandbox, "c-bug")) as svc, capture_all_logs() as logs:
        r = httpx.get(f"{svc.base_url}/connect/done", headers={"Accept": "text/html"}, timeout=30)
    assert r.status_code == 500, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert "Something went wrong on our side" in r.text and "internal_error" in r.text
    assert "Internal Server Error" not in r.text
    assert "content-security-policy" in r.headers and r.headers["x-frame-options"] == "DENY"
    assert "unexpected InjectedBugError on GET /connect/done" in logs.text
    assert "rt-very-secret-value" not in logs.text and "rt-very-secret-value" not in r.text


def test_a_bug_on_the_page_after_connecting_offers_no_way_to_connect_again(
    make_settings: Any, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error page's "Try again" restarts the connect flow from this browser's connect link: right where a
    sign-in failed, wrong on ``/connect/done`` (the patient is connected: a second sign-in makes a second connection)
    or after a disconnect. A bug's page says to reload it instead, which is safe on every page."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "c-bug")) as svc:
        link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "u-bug"}).json()["url"]
        with httpx.Client(timeout=30, headers={"Accept": "text/html"}) as browser:
            assert browser.get(link).status_code == 200  # the connect page: this browser now holds its link
            monkeypatch.setattr(pages_routes, "_session_connection", _raise)
            r = browser.get(f"{svc.base_url}/connect/done")
    assert r.status_code == 500 and "Something went wrong on our side" in r.text
    assert "/connect/restart" not in r.text and "Try again" not in r.text, r.text
    assert "Reload this page" in r.text
