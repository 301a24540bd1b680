"""The SMART callback stopping on an unexpected error (a bug), and the patient reloading it (SAL-13, SAL-38).

The error is raised at a real seam of the running service (the token vault, or right after the connection is
kept): by definition this path is a bug, so nothing in the real flow raises it. Over the real service (uvicorn)
and the sandbox EHR: what the patient sees on the first request and on a reload, that the page tells the truth
about whether their record was connected, that the code goes to the EHR once, and that no token, code or state
reaches the logs.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

import auth_service.services.launch as launch
from store.models import Connection, TokenRecord
from tests.auth_service.ehr import Service, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_callback_reload import ARMED, HTML, callback_url, token_requests
from tests.auth_service.test_flows_sandbox import register

NOTHING_SHARED = "Nothing was shared"
CONNECTED_AFTER_ALL = "Your records were connected, but something went wrong afterwards"


class InjectedBugError(RuntimeError):
    """The unexpected error: no service code knows it."""


def _start(sandbox: Any, svc: Service, client_id: str) -> None:
    register(sandbox, svc, client_id, "public")
    sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": patient_ids(sandbox)[0]})
    # a fault that never delays (0 s): its firings left count the token requests that reached the sandbox
    sandbox_admin(
        sandbox, "faults", {"kind": "slow", "path": "/oauth/token", "method": "POST", "delay_s": 0, "times": ARMED}
    )


def _stored(svc: Service) -> list[tuple[str, bool]]:
    """Each connection in the app database, and whether its tokens are there too."""
    with svc.ctx.db.session() as session:
        ids = list(session.scalars(select(Connection.id)))
        return [(i, session.get(TokenRecord, i) is not None) for i in ids]


def _page(r: httpx.Response) -> tuple[str, str]:
    """The error page's title and its plain-words explanation."""
    assert "text/html" in r.headers["content-type"], r.text[:300]
    title = re.search(r"<h1>(.*?)</h1>", r.text, re.S)
    said = re.search(r'<p role="alert" id="error-message">(.*?)</p>', r.text, re.S)
    assert title and said, r.text[:800]
    return html.unescape(title.group(1).strip()), html.unescape(said.group(1).strip())


def _first_and_reload(svc: Service, sandbox: Any) -> tuple[httpx.Response, httpx.Response, httpx.Response, str]:
    """The first callback request, the same browser's reload of it (HTML) and as an API call; and the URL."""
    with httpx.Client(timeout=30, headers=HTML) as browser:
        url = callback_url(svc, browser)
        first = browser.get(url)
        reload = browser.get(url)
        api = browser.get(url, headers={"Accept": "application/json"})
    assert token_requests(sandbox) == 1  # the reloads sent no code to the EHR
    return first, reload, api, url


def _assert_no_secrets(logs: str, url: str, *secrets: str) -> None:
    query = parse_qs(urlsplit(url).query)
    for secret in (query["code"][0], query["state"][0], *secrets):
        assert secret not in logs, "a code, state or token reached the logs (SAL-38)"
    assert "the callback stopped on an unexpected InjectedBugError" in logs  # whoever fixes the bug is told


def test_callback_that_fails_before_storing_a_connection_says_nothing_was_shared(
    make_settings, sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault refuses the tokens with an unexpected error: the connection row is rolled back with it, so nothing
    was shared, and the first request and the reload both say so on a page (not a bare 500)."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "bug-before-app")) as svc:
        _start(sandbox, svc, "bug-before-app")

        def refuse(*_: object, **__: object) -> None:
            raise InjectedBugError("the vault broke")

        monkeypatch.setattr(svc.ctx.vault, "save_token_response", refuse)
        with capture_all_logs() as logs:
            first, reload, api, url = _first_and_reload(svc, sandbox)
        assert _stored(svc) == []
        for r in (first, reload):
            assert r.status_code == 500, r.text[:500]
            title, said = _page(r)
            assert title == "We couldn't finish connecting your record"
            assert NOTHING_SHARED in said and "connected" not in said.replace("before your record was connected", "")
            assert "sign_in_interrupted" in r.text and "refresh" not in r.text
            assert r.headers["cache-control"] == "no-store"
        assert api.status_code == 500 and api.json()["error"] == "sign_in_interrupted"
        assert "before any connection was stored" in api.json()["message"]
        _assert_no_secrets(logs.text, url)


def test_callback_that_fails_after_storing_the_connection_says_the_records_were_connected(
    make_settings, sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection and its tokens are stored, then the callback stops on an unexpected error: "Nothing was
    shared" would be untrue, and "Try again" would connect the patient a second time."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "bug-after-app")) as svc:
        _start(sandbox, svc, "bug-after-app")
        keep = launch.keep_connection

        def keep_then_fail(*args: Any, **kwargs: Any) -> str:
            keep(*args, **kwargs)
            raise InjectedBugError("broke after keeping the connection")

        monkeypatch.setattr(launch, "keep_connection", keep_then_fail)
        with capture_all_logs() as logs:
            first, reload, api, url = _first_and_reload(svc, sandbox)
        [(connection_id, has_tokens)] = _stored(svc)
        assert has_tokens
        for r in (first, reload):
            assert r.status_code == 500, r.text[:500]
            title, said = _page(r)
            assert title == CONNECTED_AFTER_ALL
            assert NOTHING_SHARED not in html.unescape(r.text) and "you don't need to connect again" in said
            assert "Try again" not in r.text and "interrupted_after_connecting" in r.text
        assert api.status_code == 500 and api.json()["error"] == "interrupted_after_connecting"
        assert api.json()["connectionId"] == connection_id
        tokens = svc.ctx.vault.get_access_token(connection_id)
        _assert_no_secrets(logs.text, url, tokens)
