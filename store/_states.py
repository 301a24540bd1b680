"""Which connection states allow a token, and the mark that tells a re-acquired backend token (issue 10)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from connectors.errors import NeedsReauthError
from store.errors import ClientRejectedError, TokenUndecryptableError
from store.models import AuditEvent, Connection, ConnectionStatus, TokenRecord

__all__ = [
    "AFTER_401_MARK",
    "CLIENT_AUTH_REFUSED",
    "CLIENT_GRANT_REFUSED",
    "CLIENT_REJECTED_WINDOW",
    "PAUSED_ACTION",
    "RETRY_ALL_HINT",
    "RETRY_HINT",
    "SAME_CLIENT_REFUSED",
    "check_status",
    "check_usable",
    "fresh_after_401",
]

#: The audit ``reason`` of a client_credentials grant refused for good (``store._refused``): here, below it, so the
#: status check can say why a connection is ``client_rejected`` without importing the refresh path.
CLIENT_GRANT_REFUSED = "client_grant_refused"
#: The audit ``reason`` of a refresh_token grant refused with ``invalid_client`` (the client's authentication failed).
CLIENT_AUTH_REFUSED = "client_auth_refused"
#: The admin's retry of a ``client_rejected`` connection, named in every message about one.
RETRY_HINT = "then retry it (POST /api/integrations/smart/refresh)"
#: The audit action and ``reason`` of a connection paused, without a request, because another connection using the
#: same client credentials had its client authentication refused (``store._same_client``).
PAUSED_ACTION = "connection.paused"
SAME_CLIENT_REFUSED = "same_client_refused"
#: The admin's retry of every ``client_rejected`` connection of one provider at once.
RETRY_ALL_HINT = "POST /api/integrations/admin/providers/{provider}/reactivate"

#: Marks (in ``tokens.launch_context``) a backend token minted because its predecessor was refused with 401.
AFTER_401_MARK = "ehrsync_minted_after_401"
#: A 401 on such a token within this window means the EHR refuses the client itself (client_rejected).
CLIENT_REJECTED_WINDOW = timedelta(minutes=5)


def check_status(conn: Connection) -> None:
    if conn.status == ConnectionStatus.CLIENT_REJECTED:
        raise ClientRejectedError(f"connection {conn.id} is client_rejected: {_rejection(conn)}")
    if conn.status == ConnectionStatus.TOKEN_UNDECRYPTABLE:
        raise TokenUndecryptableError(
            f"connection {conn.id} is token_undecryptable: its stored token failed authentication under a "
            "configured key (altered, or moved from another row); restore the row from a backup (the connection "
            "is active again on its next use) or disconnect and connect again"
        )
    if conn.status != ConnectionStatus.ACTIVE:
        raise NeedsReauthError(f"connection {conn.id} is {conn.status}: a person must authorize again")


def check_usable(session: Session, connection_id: str) -> None:
    """Raise what a use of connection ``connection_id`` would raise now, from its stored state alone (no request to
    the EHR): a ``client_rejected`` one says why (its client authentication refused, or paused because another
    connection of the same app was refused, and when) and which admin call retries it (:func:`check_status`)."""
    conn = session.scalar(select(Connection).where(Connection.id == connection_id))
    if conn is None:
        raise NeedsReauthError(f"no connection with id {connection_id!r}")
    check_status(conn)


def _rejection(conn: Connection) -> str:
    """Why the EHR rejects this client and what to check, from the audit row that marked it ``client_rejected``."""
    session = object_session(conn)
    event = None
    if session is not None:
        event = session.scalar(
            select(AuditEvent)
            .where(
                AuditEvent.connection_id == conn.id,
                AuditEvent.action.in_(("token.refresh", PAUSED_ACTION)),
                AuditEvent.outcome == "client_rejected",
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
    detail = (event.detail or {}) if event is not None else {}
    all_hint = RETRY_ALL_HINT.format(provider=conn.provider_id)
    if detail.get("reason") == SAME_CLIENT_REFUSED:
        return (
            f"paused without a request: connection {detail.get('refused_connection_id')}, which uses the same client "
            f"credentials, had its client authentication refused ({detail.get('error_code')}) at "
            f"{detail.get('refused_at')}; check {detail.get('check') or 'the client credentials'}, then retry all "
            f"of them ({all_hint}) or this one (POST /api/integrations/smart/refresh)"
        )
    if detail.get("reason") == CLIENT_AUTH_REFUSED:
        return (
            f"its token endpoint refused the client's authentication on a refresh ({detail.get('error_code')}); "
            f"check {detail.get('check') or 'the client credentials'}, {RETRY_HINT} (or all of this provider's: "
            f"{all_hint}): the patient need not authorize again (the refresh token was kept)"
        )
    why = "the EHR refused even a fresh token"
    if detail.get("reason") == CLIENT_GRANT_REFUSED:
        why = f"its token endpoint refused the client_credentials grant ({detail.get('error_code')})"
    return (
        f"{why}; check the client registration (client id, key/JWKS, allowed grant and scopes), then re-enable "
        f"the connection (POST /api/integrations/smart/refresh; or all of this provider's: {all_hint})"
    )


def fresh_after_401(row: TokenRecord, now: datetime) -> bool:
    """The stored token was minted moments ago because its predecessor got a 401."""
    minted_after_401 = bool((row.launch_context or {}).get(AFTER_401_MARK))
    return minted_after_401 and now - row.issued_at <= CLIENT_REJECTED_WINDOW
