"""Patient pages in a real headless Chromium: connect link → provider choice → sandbox consent → status page
→ disconnect (SAL-07, SAL-09, SAL-39). Screenshots go to test-artifacts/auth_service/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "auth_service"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run `make install-system` (Debian package 'chromium')")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.mark.browser
def test_connect_link_consent_status_disconnect(make_settings, sandbox, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pid = patient_ids(sandbox)[2]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "pages-app")) as svc:
        sandbox_admin(
            sandbox,
            "clients",
            {"client_id": "pages-app", "client_type": "public", "redirect_uris": [svc.redirect_uri]},
        )
        link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1"}).json()["url"]
        context = browser.new_context()
        page = context.new_page()
        page.goto(link)
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.get_by_role("heading", level=1).inner_text() == "Connect your health record"
        assert page.get_by_role("radio").count() == 1
        assert page.get_by_text("Read your whole health record").is_visible()
        assert page.get_by_text("Keep your record up to date until you disconnect").is_visible()
        page.screenshot(path=str(ARTIFACTS / "1-connect.png"), full_page=True)
        sid = [c for c in context.cookies() if c["name"] == "ehrsync_sid"]
        assert sid and sid[0]["httpOnly"] and sid[0]["sameSite"] == "Lax"  # SAL-09
        page.get_by_role("button", name="Continue to sign in").click()

        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        page.select_option("#patient_id", pid)
        page.screenshot(path=str(ARTIFACTS / "2-ehr-consent.png"), full_page=True)
        page.click("#approve")

        page.wait_for_url(f"{svc.base_url}/connect/done")
        assert "code=" not in page.url  # SAL-39
        assert page.get_by_role("heading", level=1).inner_text() == "You're connected"
        assert page.locator("#status").inner_text() == "Connected"
        assert page.locator("#last-sync").inner_text() == "Not yet"
        page.screenshot(path=str(ARTIFACTS / "3-connected.png"), full_page=True)
        status = svc.admin("GET", "/api/integrations/smart/status").json()
        assert status["patient"] == pid and status["status"] == "active"

        page.get_by_role("button", name="Disconnect").click()
        page.wait_for_url(f"{svc.base_url}/connect/done")
        assert page.locator("#status").inner_text() == "Disconnected"
        page.screenshot(path=str(ARTIFACTS / "4-disconnected.png"), full_page=True)
        assert svc.admin("GET", "/api/integrations/smart/status").json()["error"] == "not_connected"
        context.close()


@pytest.mark.browser
def test_expired_or_tampered_link_shows_error_page(make_settings, sandbox, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_service(make_settings, sandbox, smart_practice(sandbox, "pages-app-2")) as svc:
        link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "u"}).json()["url"]
        page = browser.new_page()
        response = page.goto(link[:-3] + "zzz")
        assert response is not None and response.status == 400
        assert page.locator("#error-code").inner_text() == "invalid_link"
        page.screenshot(path=str(ARTIFACTS / "5-bad-link.png"), full_page=True)
        page.close()
