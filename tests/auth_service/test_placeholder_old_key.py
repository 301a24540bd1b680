"""A placeholder key (every byte the same, e.g. all zeros: public) listed in INTEGRATIONS_TOKEN_ENC_KEYS_OLD after a
rotation away from it still opens the stored tokens (so ``ehrsync keys rotate`` can re-seal them), but nothing a
browser or an API caller presents opens under it: the ``ehrsync_conn`` cookie, the disconnect form's csrf token, a
connect link, a resources page cursor. The service warns at start-up while such a key is listed, without the key.

Before, all four opened: anyone who knew the placeholder and a connection id could seal a cookie for their own
browser session, see that connection's pages and disconnect it, open connect links of any tenant, forge cursors.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable

import pytest
from fastapi import Response

from auth_service.api.browser_seal import owner_of
from auth_service.api.connect_cookies import remember_connection
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.core.links import LinkSigner
from auth_service.core.page_cursor import CursorSigner, PageQuery
from auth_service.core.sealed_links import ConnectLinks
from connectors.smart import parse_token_response
from store import TokenCipher, TokenVault, rotate_keys
from store.crypto import derive_kid
from store.models import Connection, TokenRecord
from tests.auth_service.conftest import AppHandle
from tests.auth_service.keyutil import enc_key
from tests.auth_service.practice import add_connection
from tests.auth_service.test_patient_cookie_rotation import _set_cookie

PLACEHOLDER = bytes(32)  # "AAAA...A=": the key an example or an old demo shipped
PLACEHOLDER_TEXT = base64.b64encode(PLACEHOLDER).decode()
SID = "attacker-chosen-session-id-" + "x" * 20  # a browser picks its own ehrsync_sid
KINDS = ["connection cookie", "csrf token", "connect link", "page cursor"]


def _rotated_away_from_placeholder(
    make_app: Callable[..., AppHandle], caplog: pytest.LogCaptureFixture
) -> tuple[AppHandle, str, str]:
    """Tokens stored under the placeholder (an old demo's key), then a real rotation to a random key with the
    placeholder listed as old: the running service still opens them, and ``rotate_keys`` re-seals them."""
    keys = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key(), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"demo:{PLACEHOLDER_TEXT}"}
    caplog.set_level(logging.WARNING)
    handle = make_app(**keys)
    startup = [r.getMessage() for r in caplog.records if "placeholder" in r.getMessage()]
    assert len(startup) == 1 and derive_kid(PLACEHOLDER) in startup[0], startup
    assert PLACEHOLDER_TEXT not in startup[0] and "AAAAAAAA" not in startup[0], startup
    ctx = handle.app.state.ctx
    api_key = handle.bootstrap("t1")
    with ctx.db.session() as session, session.begin():
        conn_id = add_connection(session)
    body = {"access_token": "AT", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT"}
    TokenVault(ctx.db, TokenCipher(PLACEHOLDER)).save_token_response(conn_id, parse_token_response(body))
    assert ctx.vault.get_access_token(conn_id) == "AT"  # stored under the placeholder: still opens
    assert rotate_keys(ctx.db, TokenCipher.from_env(keys)) == 2  # `ehrsync keys rotate` re-seals them
    with ctx.db.session() as session:
        assert {r.key_id for r in session.query(TokenRecord).all()} == {ctx.cipher.active_kid}
    assert ctx.vault.get_access_token(conn_id) == "AT"
    return handle, conn_id, api_key


@pytest.mark.parametrize("kind", KINDS)
def test_a_placeholder_old_key_opens_stored_tokens_but_no_presented_value(
    make_app: Callable[..., AppHandle], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    handle, conn_id, api_key = _rotated_away_from_placeholder(make_app, caplog)
    ctx, client = handle.app.state.ctx, handle.client
    caplog.clear()
    public = TokenCipher(PLACEHOLDER)  # what anyone can seal with
    forged_marker = json.dumps({"c": conn_id, "exp": int(time.time()) + 3600})
    forged_cookie = public.encrypt(forged_marker, tenant_id="", owner_id=owner_of(SID), field="connection-marker")
    genuine = Response()
    remember_connection(genuine, ctx, SID, conn_id)  # what the service itself sets (active key)
    client.cookies.set(SESSION_COOKIE, SID)
    if kind == "connection cookie":
        client.cookies.set(CONNECTION_COOKIE, _set_cookie(genuine, CONNECTION_COOKIE))
        assert client.get("/connect/done").status_code == 200  # the genuine cookie opens
        client.cookies.set(CONNECTION_COOKIE, forged_cookie)
        for page in ("/connect/done", "/connect/disconnect"):
            r = client.get(page)
            assert r.status_code == 404 and "not_connected" in r.text, (page, r.status_code, r.text)
    elif kind == "csrf token":
        client.cookies.set(CONNECTION_COOKIE, _set_cookie(genuine, CONNECTION_COOKIE))
        csrf = public.encrypt("disconnect", tenant_id="", owner_id=owner_of(SID), field="csrf:disconnect")
        form = {"connection_id": conn_id, "csrf": csrf, "confirm": "yes"}
        r = client.post("/connect/disconnect", data=form)
        assert r.status_code == 400 and "invalid_request" in r.text, (r.status_code, r.text)
        with ctx.db.session() as session:
            assert session.get(Connection, conn_id).status == "active"
    elif kind == "connect link":
        link = ConnectLinks(public, LinkSigner(b"unused")).sign("t1", "someone-else", 600)
        r = client.get("/connect", params={"link": link})
        assert r.status_code == 400 and "invalid_link" in r.text, (r.status_code, r.text)
        r = client.get("/api/integrations/smart/login", params={"link": link, "provider": "smart"})
        assert r.status_code == 400 and "invalid_link" in r.text, (r.status_code, r.text)
    else:
        for secret in (PLACEHOLDER, PLACEHOLDER_TEXT.encode()):  # keyed on its text or on its bytes
            cursor = CursorSigner(secret).encode(PageQuery("t1", conn_id, None), ("Observation", "a"))
            params = {"connectionId": conn_id, "cursor": cursor}
            r = client.get("/api/ehr/resources", params=params, headers={"X-API-Key": api_key})
            assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING and "placeholder" in r.getMessage()]
    if kind != "page cursor":  # the browser's value is logged as the cookies are: its kind and why, never it
        assert refusals and all(PLACEHOLDER_TEXT not in r.getMessage() for r in refusals)
