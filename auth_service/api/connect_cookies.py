"""Cookies that carry the patient's connect flow across the EHR round trip, never readable by anyone.

``ehrsync_link`` keeps the (sealed) connect link so an error page can offer "Try again" from the start;
``ehrsync_choice`` keeps the health system the patient picked and the host app's ``return_to``, sealed with
the vault cipher and bound to the browser session (associated data), for the done page; ``ehrsync_conn`` names
the connection this browser made (done and disconnect pages), sealed and bound the same way. Sealed, they still
open after a vault key rotation while the old key is in ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD``, as connect links do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass

from fastapi import Request, Response

from auth_service.api.deps import CONNECTION_COOKIE, browser_session, set_cookie
from auth_service.core.links import InvalidLinkError
from auth_service.services.context import ServiceContext
from store.crypto import CipherError

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


def _owner(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def remember_link(response: Response, ctx: ServiceContext, link: str, max_age: int) -> None:
    set_cookie(response, ctx, LINK_COOKIE, link, max_age=max(1, max_age))


def remember_choice(response: Response, ctx: ServiceContext, sid: str, choice: ConnectChoice) -> None:
    sealed = ctx.cipher.encrypt(json.dumps(asdict(choice)), tenant_id="", owner_id=_owner(sid), field=_FIELD)
    set_cookie(response, ctx, CHOICE_COOKIE, sealed, max_age=86400)


def read_choice(request: Request, ctx: ServiceContext) -> ConnectChoice | None:
    """The choice this browser made, or ``None`` (absent, another browser's, altered or unreadable)."""
    sealed, sid = request.cookies.get(CHOICE_COOKIE), browser_session(request)
    if not sealed or not sid or not sealed.isascii():
        return None
    try:
        data = json.loads(ctx.cipher.decrypt(sealed, tenant_id="", owner_id=_owner(sid), field=_FIELD))
        return ConnectChoice(**data)
    except (CipherError, ValueError, TypeError):
        return None


def remember_connection(response: Response, ctx: ServiceContext, sid: str, connection_id: str) -> None:
    claims = {"c": connection_id, "exp": int(time.time()) + _CONNECTION_MAX_AGE}
    sealed = ctx.cipher.encrypt(json.dumps(claims), tenant_id="", owner_id=_owner(sid), field=_CONNECTION_FIELD)
    set_cookie(response, ctx, CONNECTION_COOKIE, sealed, max_age=_CONNECTION_MAX_AGE)


def read_connection_id(request: Request, ctx: ServiceContext) -> str | None:
    """The connection this browser made, or ``None`` (absent, another browser's, expired, altered or unreadable)."""
    marker, sid = request.cookies.get(CONNECTION_COOKIE), browser_session(request)
    if not marker or not sid or not marker.isascii():
        return None
    if marker.count(".") == 1:  # HMAC-signed by an earlier version (active key only); they expire within a day
        try:
            claims = ctx.sessions.verify(marker)
        except InvalidLinkError:
            return None
        return claims.tenant_id if hmac.compare_digest(claims.user_ref, _owner(sid)) else None
    try:
        data = json.loads(ctx.cipher.decrypt(marker, tenant_id="", owner_id=_owner(sid), field=_CONNECTION_FIELD))
        expires_at, connection_id = int(data["exp"]), str(data["c"])
    except (CipherError, ValueError, TypeError, KeyError):
        return None
    return connection_id if expires_at >= time.time() else None
