"""A patient's new grant stored on the connection it replaces: the tokens row rewritten, the old tokens handed back.

The new authorization is a new grant (RFC 6749 §4.1): none of the old row's tokens is kept. A refresh token the
new answer lacks is not the old one kept (as a refresh answer without one keeps it, SAL-24): that one was refused
(``needs_reauth``) or belongs to the grant this one supersedes. The old row's id token and launch context go too.
The row's ``version`` grows, so a refresh of the old grant in flight in another process writes nothing over the
new tokens (``_refresh_apply``). The old tokens the new answer does not reuse are returned for the caller to
revoke at the EHR once this transaction is committed (best effort, and only if no connection holds them).
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy.orm import Session

from connectors.smart import TokenResponse
from store._refresh_apply import lock_row
from store.audit import audit_connection
from store.crypto import TokenCipher
from store.errors import TokenUndecryptableError
from store.models import Connection, TokenRecord
from store.tokenrows import open_field, write_tokens

__all__ = ["replace_grant"]


def replace_grant(
    session: Session, cipher: TokenCipher, conn: Connection, response: TokenResponse, *, now: datetime
) -> list[tuple[str, str]]:
    """Store ``response`` as ``conn``'s only tokens, in ``session``'s transaction; returns the old tokens
    (``(token type, token)``, refresh token first) it does not reuse. None when the EHR answered with the refresh
    token the row held (the same grant: revoking its old access token could end it too, RFC 7009 §2.1)."""
    row = lock_row(session, conn.id)
    old = _old_tokens(cipher, row) if row is not None else {}
    if row is not None:
        row.refresh_token_ct = None
        row.id_token_ct = None
        row.launch_context = {}
        row.scope = None  # the answer's, as a new row has: absent, not the old grant's (``write_tokens``)
    write_tokens(session, cipher, conn, row, response, now=now)
    detail = {"expires_in": response.expires_in, "scope": response.scope, "replaced_grant": True}
    audit_connection(session, conn, action="token.save", outcome="success", detail=detail)
    if _same(old.get("refresh_token"), response.refresh_token):
        return []
    pairs = [("refresh_token", old.get("refresh_token")), ("access_token", old.get("access_token"))]
    return [(hint, value) for hint, value in pairs if value and not _same(value, response.access_token)]


def _old_tokens(cipher: TokenCipher, row: TokenRecord) -> dict[str, str]:
    """The row's refresh and access tokens that can be opened here (one that cannot is nobody's to revoke)."""
    found: dict[str, str] = {}
    for field in ("refresh_token", "access_token"):
        if getattr(row, f"{field}_ct") is None:
            continue
        try:
            found[field] = open_field(cipher, row, field)
        except TokenUndecryptableError:  # altered, or sealed under a key only another process has: not revoked
            continue
    return found


def _same(stored: str | None, new: str | None) -> bool:
    return bool(stored) and bool(new) and hmac.compare_digest(str(stored).encode(), str(new).encode())
