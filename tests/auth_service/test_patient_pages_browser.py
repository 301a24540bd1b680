"""Patient pages in a real headless Chromium (SAL-07, SAL-09, SAL-39): find a health system by name among a
few hundred brands (as you type, and without JavaScript), sandbox consent, the done page naming the practice
and the health system with the way back to the host app, disconnect after a confirmation, and error pages
with a way to try again. Every page of ours passes axe-core with no serious or critical violation.
Screenshots and axe reports go to test-artifacts/auth_service/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe

from auth_service.pages.error_text import RESTART_ELSEWHERE
from tests.auth_service.brands_data import brands_bundle
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
HOST_APP = "https://app.clinic.example"
_AXE = Axe()


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


def check_page(page: Any, name: str) -> None:
    """Screenshot, then axe-core (bundled with axe-playwright-python: no network) on the page as shown."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator("html").get_attribute("lang") == "en"
    results = _AXE.run(page, options={"resultTypes": ["violations"]})
    violations = results.response["violations"]
    (ARTIFACTS / f"{name}.axe.json").write_text(json.dumps(violations, indent=1), encoding="utf-8")
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], f"{name}: axe-core found {bad}"
    assert results.response["testEngine"]["version"].startswith("4.")


def practice(sandbox: Any, client_id: str) -> dict[str, Any]:
    return {**smart_practice(sandbox, client_id), "allowedReturnOrigins": [HOST_APP]}


def start(svc: Any, sandbox: Any, client_id: str, **link: Any) -> str:
    sandbox_admin(
        sandbox, "clients", {"client_id": client_id, "client_type": "public", "redirect_uris": [svc.redirect_uri]}
    )
    body = json.dumps(brands_bundle(300, sandbox.fhir_base))
    assert svc.admin("PUT", "/api/integrations/admin/brands/regional", content=body).status_code == 200
    return str(
        svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1", **link}).json()["url"]
    )


@pytest.mark.browser
def test_search_as_you_type_consent_done_and_confirmed_disconnect(make_settings, sandbox, browser) -> None:
    pid = patient_ids(sandbox)[2]
    with running_service(make_settings, sandbox, practice(sandbox, "pages-app")) as svc:
        link = start(svc, sandbox, "pages-app", return_to=f"{HOST_APP}/after-connect?tab=records")
        assert "host-user-1" not in link
        context = browser.new_context()
        page = context.new_page()
        page.goto(link)
        assert page.get_by_role("heading", level=1).inner_text() == "Connect your health record"
        assert page.get_by_role("radio").count() == 0 and page.locator("#continue").is_hidden()
        assert page.get_by_text("Keep your record up to date until you disconnect").is_visible()
        check_page(page, "1-connect")
        sid = [c for c in context.cookies() if c["name"] == "ehrsync_sid"]
        assert sid and sid[0]["httpOnly"] and sid[0]["sameSite"] == "Lax"  # SAL-09

        search = page.get_by_role("searchbox", name="Find your health system")
        search.press_sequentially("zur", delay=30)
        page.get_by_role("radio", name="Zürich Kinderspital").wait_for()
        # the named brand first, then those located in Zürich; the count is announced in the live region
        assert page.get_by_role("radio").first.get_attribute("value") == page.get_by_role(
            "radio", name="Zürich Kinderspital"
        ).get_attribute("value")
        assert "health systems match “zur”" in page.get_by_role("status").inner_text()
        assert "q=zur" in page.url  # the address can be shared or reloaded, and shows the same results
        search.fill("")
        search.press_sequentially("st mary", delay=30)
        page.get_by_role("radio", name="St. Mary's Medical Center").wait_for()
        assert page.get_by_role("status").inner_text() == "1 health system match “st mary”."
        assert page.get_by_role("radio", name="St. Mary's Medical Center").is_checked()  # the only match
        search.fill("zurich")
        page.get_by_role("status").filter(has_text="“zurich”").wait_for()
        search.press("ArrowDown")  # keyboard: from the search box into the results
        assert page.evaluate("document.activeElement.value") == page.get_by_role(
            "radio", name="Zürich Kinderspital"
        ).get_attribute("value")
        page.keyboard.press("Space")
        assert page.get_by_role("radio", name="Zürich Kinderspital").is_checked()
        check_page(page, "2-connect-results")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "continue"
        page.keyboard.press("Enter")

        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        page.select_option("#patient_id", pid)
        page.screenshot(path=str(ARTIFACTS / "3-ehr-consent.png"), full_page=True)
        page.click("#approve")

        page.wait_for_url(f"{svc.base_url}/connect/done")
        assert "code=" not in page.url  # SAL-39
        assert page.get_by_role("heading", level=1).inner_text() == "You're connected"
        assert page.locator("#clinic").inner_text() == "Clinic One"
        assert page.locator("#health-system").inner_text() == "Zürich Kinderspital"
        assert page.locator("#status").inner_text() == "Connected"
        assert page.locator("#last-sync").inner_text() == "Not yet"
        back = page.get_by_role("link", name="Return to Clinic One")
        assert back.get_attribute("href") == f"{HOST_APP}/after-connect?tab=records"
        check_page(page, "4-connected")
        status = svc.admin("GET", "/api/integrations/smart/status").json()
        assert status["patient"] == pid and status["status"] == "active"

        page.get_by_role("link", name="Disconnect…").click()
        page.wait_for_url(f"{svc.base_url}/connect/disconnect")
        assert page.get_by_role("heading", level=1).inner_text() == "Disconnect Zürich Kinderspital?"
        assert "are not deleted when you disconnect" in page.locator("#retention").inner_text()
        check_page(page, "5-disconnect-confirm")
        page.get_by_role("link", name="No, stay connected").click()
        page.wait_for_url(f"{svc.base_url}/connect/done")
        assert page.locator("#status").inner_text() == "Connected"

        page.get_by_role("link", name="Disconnect…").click()
        page.get_by_role("button", name="Yes, disconnect").click()
        page.wait_for_url(f"{svc.base_url}/connect/done")
        assert page.locator("#status").inner_text() == "Disconnected"
        check_page(page, "6-disconnected")
        assert svc.admin("GET", "/api/integrations/smart/status").json()["error"] == "not_connected"
        context.close()


@pytest.mark.browser
def test_without_javascript_the_search_form_finds_and_connects(make_settings, sandbox, browser) -> None:
    with running_service(make_settings, sandbox, practice(sandbox, "pages-nojs")) as svc:
        link = start(svc, sandbox, "pages-nojs")
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(link)
        page.get_by_role("searchbox", name="Find your health system").fill("GOOD health")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url("**/connect?*q=GOOD+health*")
        assert page.get_by_role("radio", name="Good Health").is_checked()
        assert page.get_by_role("status").inner_text() == "1 health system match “GOOD health”."
        page.screenshot(path=str(ARTIFACTS / "7-connect-no-javascript.png"), full_page=True)
        # axe-core needs script: the same server-rendered page, opened where scripts run, is checked instead
        checker = browser.new_page()
        checker.goto(page.url)
        assert checker.get_by_role("radio", name="Good Health").is_checked()
        check_page(checker, "7-connect-no-javascript-axe")
        checker.close()
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        context.close()


@pytest.mark.browser
def test_error_pages_say_what_happened_and_offer_to_try_again(make_settings, sandbox, browser) -> None:
    with running_service(make_settings, sandbox, practice(sandbox, "pages-err")) as svc:
        link = start(svc, sandbox, "pages-err")
        context = browser.new_context()
        page = context.new_page()
        response = page.goto(link[:-3] + "zzz")
        assert response is not None and response.status == 400
        assert page.get_by_role("heading", level=1).inner_text() == "This connect link has expired or is not valid"
        assert page.locator("#error-code").text_content() == "invalid_link"
        check_page(page, "8-bad-link")
        response = page.goto(link.split("?")[0])  # a link a mail or text message cut at its "?"
        assert response is not None and response.status == 400
        assert page.get_by_role("heading", level=1).inner_text() == "This connect link has expired or is not valid"
        assert page.locator("#error-code").text_content() == "invalid_link"

        page.goto(link)
        page.get_by_role("searchbox", name="Find your health system").fill("good health")
        page.get_by_role("radio", name="Good Health").wait_for()
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        page.click("#deny")
        page.wait_for_url(f"{svc.base_url}/api/integrations/smart/callback*")
        assert page.get_by_role("heading", level=1).inner_text() == "Access was not allowed"
        assert page.locator("#error-code").text_content() == "access_denied"
        check_page(page, "9-access-denied")
        page.get_by_role("link", name="Try again").click()
        page.wait_for_url(f"{svc.base_url}/connect?link=*")
        assert page.get_by_role("heading", level=1).inner_text() == "Connect your health record"
        context.close()


@pytest.mark.browser
def test_the_axe_check_finds_violations_when_there_are_some(browser) -> None:
    """Guards the checks above against passing vacuously: an unlabeled field in low contrast is reported."""
    page = browser.new_page()
    page.set_content('<html><body><input type="text"><p style="color:#ccc;background:#fff">faint</p></body></html>')
    found = {v["id"]: v["impact"] for v in _AXE.run(page).response["violations"]}
    assert found.get("label") == "critical" and found.get("color-contrast") == "serious" and "html-has-lang" in found
    page.close()


@pytest.mark.browser
def test_cancelling_an_ehr_launch_at_the_ehr_offers_no_dead_end(make_settings, sandbox, browser) -> None:
    """A patient who launched the app from the EHR's portal and pressed Deny: the error page says access was not
    allowed and offers no "Try again" that could only lead to "This connect link has expired" (there is no
    connect link in this flow; only the EHR can launch again). It said "try again and allow access" with no way
    to: it now says how (open the app again from the health system's website or app)."""
    pid = patient_ids(sandbox)[1]
    with running_service(make_settings, sandbox, practice(sandbox, "pages-ehr")) as svc:
        sandbox_admin(
            sandbox, "clients", {"client_id": "pages-ehr", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        )
        context = browser.new_context()
        page = context.new_page()
        launch_url = f"{svc.base_url}/api/integrations/smart/launch"
        page.goto(f"{sandbox.base_url}/admin/ehr-launch?" + urlencode({"launch_url": launch_url, "patient_id": pid}))
        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        page.click("#deny")
        page.wait_for_url(f"{svc.base_url}/api/integrations/smart/callback*")
        assert page.get_by_role("heading", level=1).inner_text() == "Access was not allowed"
        assert page.locator("#error-code").text_content() == "access_denied"
        assert "launch=" not in page.content() and "state=" not in page.content()
        assert page.get_by_role("link", name="Try again").count() == 0
        # the page says "try again and allow access": it says how, since it cannot offer a link
        hint = page.locator("#restart-hint")
        assert hint.inner_text() == RESTART_ELSEWHERE and "health system's website or app" in RESTART_ELSEWHERE
        check_page(page, "10-ehr-launch-denied")
        context.close()


@pytest.mark.browser
def test_a_health_system_that_is_down_gets_the_error_page_and_try_again_works(make_settings, sandbox, browser) -> None:
    """The patient picks a health system whose server is down: "Continue to sign in" shows the page saying so
    (not a JSON body), and once it is back "Try again" leads to its sign-in."""
    with running_service(make_settings, sandbox, practice(sandbox, "pages-down")) as svc:
        link = start(svc, sandbox, "pages-down")
        context = browser.new_context()
        page = context.new_page()
        page.goto(link)
        page.get_by_role("searchbox", name="Find your health system").fill("good health")
        page.get_by_role("radio", name="Good Health").wait_for()
        fhir_path = urlsplit(sandbox.fhir_base).path
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": fhir_path, "times": None, "retry_after": ""})
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url(f"{svc.base_url}/api/integrations/smart/login*")
        assert page.get_by_role("heading", level=1).inner_text() == "Your health system is not answering right now"
        assert page.locator("#error-code").text_content() == "ehr_unavailable"
        check_page(page, "11-health-system-down")
        assert page.locator("#restart-hint").count() == 0  # the link says how
        sandbox_admin(sandbox, "faults", method="DELETE")
        page.get_by_role("link", name="Try again").click()
        page.wait_for_url(f"{svc.base_url}/connect?link=*")
        page.get_by_role("searchbox", name="Find your health system").fill("good health")
        page.get_by_role("radio", name="Good Health").wait_for()
        page.get_by_role("button", name="Continue to sign in").click()
        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        context.close()


@pytest.mark.browser
def test_sal13_reloading_the_callback_during_a_slow_token_exchange_ends_on_the_done_page(
    make_settings, sandbox, browser
) -> None:
    """The EHR takes 8 s to answer the token request and the patient reloads the page: "still connecting",
    refreshing itself without script, then the done page; the code reached the EHR once."""
    pid = patient_ids(sandbox)[3]
    with running_service(make_settings, sandbox, practice(sandbox, "pages-reload")) as svc:
        client = {"client_id": "pages-reload", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        sandbox_admin(sandbox, "clients", client)
        slow = {"kind": "slow", "path": "/oauth/token", "method": "POST", "delay_s": 8.0, "times": 10}
        sandbox_admin(sandbox, "faults", slow)
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(svc.base_url + "/api/integrations/smart/login?tenant=t1&provider=smart")
        page.wait_for_url(f"{sandbox.base_url}/oauth/authorize*")
        page.select_option("#patient_id", pid)
        with page.expect_request(lambda r: r.url.startswith(svc.redirect_uri)) as sent:
            page.click("#approve", no_wait_after=True)
        callback = sent.value.url
        page.wait_for_timeout(300)  # the first request is now waiting on the slow token endpoint

        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status) if r.url == callback else None)
        shown = page.goto(callback, wait_until="commit")  # the patient reloads the page that is still loading
        assert shown is not None and shown.status == 202  # its words: _check_still_connecting
        _check_still_connecting(context, callback)
        page.wait_for_url(f"{svc.base_url}/connect/done", timeout=20_000)
        assert page.get_by_role("heading", level=1).inner_text() == "You're connected"
        assert page.locator("#status").inner_text() == "Connected"
        assert answers[0] == 202 and answers[-1] == 303 and len(answers) >= 3, answers  # it refreshed itself
        left = [f["times"] for f in sandbox_admin(sandbox, "faults", method="GET") if f["path"] == "/oauth/token"]
        assert left == [9]  # one token request reached the EHR
        context.close()


def _check_still_connecting(context: Any, callback: str) -> None:
    """axe (it needs script: the same browser's cookies where scripts run) on the "still connecting" page, held
    still: its own refresh is aborted (the page stays as shown)."""
    checker = context.browser.new_context(storage_state=context.storage_state()).new_page()
    seen: list[str] = []

    def once(route: Any) -> None:
        seen.append(route.request.url)
        route.continue_() if len(seen) == 1 else route.abort("aborted")

    checker.route(lambda url: url == callback, once)
    shown = checker.goto(callback, wait_until="commit")
    assert shown is not None and shown.status == 202
    assert checker.get_by_role("heading", level=1).inner_text() == "Still connecting your record"
    checker.wait_for_load_state()
    check_page(checker, "9-reload-still-connecting")
    checker.context.close()
