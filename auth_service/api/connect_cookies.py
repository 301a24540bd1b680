"""Cookies that carry the patient's connect flow across the EHR round trip, never readable by anyone.

``ehrsync_link`` keeps the (sealed) connect link so an error page can offer "Try again" from the start;
``ehrsync_choice`` keeps the health system the patient picked and the host app's ``return_to``, sealed with
the vault cipher and bound to the browser session (associated data), for the done page; ``ehrsync_conn`` names
the connection this browser made (done and disconnect pages), sealed and bound the same way. Sealed, they still
open after a vault key rotation while the old key is in ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD``, as connect links do.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict, dataclass

from fastapi import Request, Response

from auth_service.api.browser_seal import open_sealed, owner_of, refused, seal
from auth_service.api.deps import CONNECTION_COOKIE, browser_session, set_cookie
from auth_service.core.links import InvalidLinkError
from auth_service.services.context import ServiceContext

__all__ = [
    "CHOICE_COOKIE",
    "LINK_COOKIE",
    "ConnectChoice",
    "read_choice",
    "read_connection_id",
    "remember_choice",
    "remember_connection",
    "remember_link",
]

CHOICE_COOKIE = "ehrsync_choice"
LINK_COOKIE = "ehrsync_link"
_FIELD = "connect-choice"
_CONNECTION_FIELD = "connection-marker"
_CONNECTION_MAX_AGE = 86400


@dataclass(frozen=True)
class ConnectChoice:
    tenant_id: str
    provider_id: str
    system_name: str | None
    return_to: str | None


def remember_link(response: Response, ctx: ServiceContext, link: str, max_age: int) -> None:
    set_cookie(response, ctx, LINK_COOKIE, link, max_age=max(1, max_age))


def remember_choice(response: Response, ctx: ServiceContext, sid: str, choice: ConnectChoice) -> None:
    set_cookie(response, ctx, CHOICE_COOKIE, seal(ctx, sid, _FIELD, json.dumps(asdict(choice))), max_age=86400)


def read_choice(request: Request, ctx: ServiceContext) -> ConnectChoice | None:
    """The choice this browser made, or ``None`` (absent, another browser's, altered or unreadable: logged)."""
    what = f"the {CHOICE_COOKIE} cookie (the health system picked)"
    plain = open_sealed(ctx, browser_session(request), request.cookies.get(CHOICE_COOKIE), field=_FIELD, what=what)
    if plain is None:
        return None
    try:
        return ConnectChoice(**json.loads(plain))
    except (ValueError, TypeError):
        refused(what, "malformed (its content is not a health system choice)")
        return None


def remember_connection(response: Response, ctx: ServiceContext, sid: str, connection_id: str) -> None:
    claims = {"c": connection_id, "exp": int(time.time()) + _CONNECTION_MAX_AGE}
    sealed = seal(ctx, sid, _CONNECTION_FIELD, json.dumps(claims))
    set_cookie(response, ctx, CONNECTION_COOKIE, sealed, max_age=_CONNECTION_MAX_AGE)


def read_connection_id(request: Request, ctx: ServiceContext) -> str | None:
    """The connection this browser made, or ``None``: absent (silent), or another browser's, expired, altered or
    sealed under a key no longer configured (each logged with its cause, never the cookie or the connection)."""
    marker, sid = request.cookies.get(CONNECTION_COOKIE), browser_session(request)
    what = f"the {CONNECTION_COOKIE} cookie (the connection this browser made)"
    if marker and sid and marker.isascii() and marker.count(".") == 1:
        return _read_legacy_marker(ctx, marker, sid, what)
    plain = open_sealed(ctx, sid, marker, field=_CONNECTION_FIELD, what=what)
    if plain is None:
        return None
    try:
        data = json.loads(plain)
        expires_at, connection_id = int(data["exp"]), str(data["c"])
    except (ValueError, TypeError, KeyError):
        refused(what, "malformed (its content is not a connection marker)")
        return None
    if expires_at < time.time():
        refused(what, "expired (made more than a day ago)")
        return None
    return connection_id


def _read_legacy_marker(ctx: ServiceContext, marker: str, sid: str, what: str) -> str | None:
    """A marker HMAC-signed by an earlier version (active key only); they expire within a day."""
    try:
        claims = ctx.sessions.verify(marker)
    except InvalidLinkError:
        refused(what, "in the earlier HMAC format and not valid under the active key (a key rotation, or expired)")
        return None
    if not hmac.compare_digest(claims.user_ref, owner_of(sid)):
        refused(what, "bound to another browser session")
        return None
    return claims.tenant_id
