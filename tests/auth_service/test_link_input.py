"""Connect links, the connection cookie and the disconnect form's csrf come from the browser: any text in them
(non-ASCII included) is a clear ``invalid_link`` / ``not_connected`` / ``invalid_request`` answer, never a 500
(``hmac.compare_digest`` raises TypeError on non-ASCII str)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.app import create_app
from auth_service.core.links import InvalidLinkError, LinkSigner
from store.models import Connection
from tests.auth_service.conftest import LiveServer
from tests.auth_service.practice import live_clinic

BAD_LINKS = ["é.abc", "abc.é", "ü", "payload.sig\u2028", "\x00.\x00"]


@pytest.mark.parametrize("token", BAD_LINKS)
def test_verify_rejects_non_ascii_tokens(token: str) -> None:
    with pytest.raises(InvalidLinkError):
        LinkSigner(b"k" * 32).verify(token)


def test_non_ascii_links_get_a_typed_error_over_http(make_settings: Callable[..., Any]) -> None:
    def factory(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url))

    with LiveServer(factory) as server, httpx.Client(base_url=server.base_url) as http:
        for token in BAD_LINKS[:3]:
            r = http.get("/connect", params={"link": token}, headers={"Accept": "application/json"})
            assert r.status_code == 400, (token, r.status_code, r.text)
            r = http.get(
                "/api/integrations/smart/login", params={"provider": "smart", "link": token}, follow_redirects=False
            )
            assert r.status_code == 400 and r.json()["error"] == "invalid_link", (token, r.text)


def test_non_ascii_csrf_on_disconnect_is_rejected_not_a_500(make_settings: Callable[..., Any]) -> None:
    """The patient's disconnect form: a forged csrf value of any text is refused with the error page."""

    with live_clinic(make_settings) as (server, ctx, conn_id):
        sid = "s" * 43
        marker = ctx.sessions.sign(conn_id, hashlib.sha256(sid.encode()).hexdigest(), ttl_seconds=600)
        cookies = {SESSION_COOKIE: sid, CONNECTION_COOKIE: marker}
        with httpx.Client(base_url=server.base_url, cookies=cookies) as http:
            r = http.post("/connect/disconnect", data={"connection_id": conn_id, "csrf": "é" * 10})
        assert r.status_code == 400, r.text
        with ctx.db.session() as session:
            assert session.get(Connection, conn_id).status == "active"  # nothing was disconnected
