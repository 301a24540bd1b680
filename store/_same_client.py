"""One refusal of the app's credentials pauses every connection that authenticates with them.

Client credentials belong to the app's registration, not to one connection: a ``client_secret`` that expired or
was rotated at the EHR, a ``private_key_jwt`` key it no longer has, a client it disabled, refuse every connection
of that app alike. When the token endpoint refuses one connection's client authentication (``invalid_client``, RFC
6749 §5.2, on a refresh or a backend ``client_credentials`` grant: ``store._refused``), each other ``active``
connection using the same credentials would send one more failing authentication on its next refresh (some EHRs
lock a client, or alert, after repeated failures) only to end ``client_rejected`` too. So they are marked
``client_rejected`` at once, without a request, each with an audit row ``connection.paused`` naming the connection
whose refusal paused it and when (never a secret or PHI). The admin retries them all at once once the credentials
are fixed (``POST /api/integrations/admin/providers/{provider}/reactivate``; each one through
``TokenVault.reactivate``).

*Same credentials* means the same tenant and provider (the provider config row: it holds the secret or the key),
the same client id (the one stored on the connection: the id its grant was issued to and its refresh token is
bound to, RFC 6749 §6, which every refresh, mint and revocation of it authenticates as, in the auth service as in
the pipelines, even after the operator rotated the provider config's client id) and the same token endpoint (the
connection's stored one, or, when it stored none, the same FHIR base, whose discovery names the endpoint). Narrower
than the provider config alone on purpose: a client id is registered per authorization server (Epic's one id is
accepted at many organizations' endpoints, each with its own key or secret), and a connection left on an older
client id may still be accepted. A connection this key misses is never paused wrongly: it meets the refusal itself
on its next refresh.

Only ``invalid_client`` pauses others: the other refusals of a ``client_credentials`` grant (``invalid_scope``,
``unauthorized_client``, ``invalid_grant`` for an assertion) depend on the grant and scope that connection asks for,
not on the credentials every connection shares. Only ``active`` connections are paused; one another process is
refreshing right now (its row locked on PostgreSQL, its refresh lock held on SQLite) is left to its own answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from store._refresh_lock import RefreshLockTimeoutError, sqlite_refresh_lock
from store._states import PAUSED_ACTION, SAME_CLIENT_REFUSED
from store.audit import audit_connection
from store.database import AppDatabase
from store.models import Connection, ConnectionStatus

__all__ = ["ClientRefusal", "pause_same_client"]

logger = logging.getLogger(__name__)
_Free = Callable[[str], bool]  # whether no other refresher holds this connection now (SQLite's refresh lock)


@dataclass(frozen=True)
class ClientRefusal:
    """What the refused request was: enough to find the connections sharing its credentials and to tell why."""

    token_endpoint: str
    grant: str
    auth_method: str
    error_code: str
    check: str


def pause_same_client(
    db: AppDatabase, refused_id: str, refusal: ClientRefusal, now: datetime, session: Session | None = None
) -> list[str]:
    """Mark ``client_rejected`` every other active connection using ``refused_id``'s credentials, one audit row
    each; returns their ids. PostgreSQL: in ``session`` (the refusal's own transaction), skipping rows another
    transaction holds. SQLite (``session`` None): a write transaction of its own right after the refusal's, skipping
    connections whose refresh lock another refresher holds (it would drop its own answer otherwise); a database
    error there is logged, never hides the refusal (each of them meets it on its own next refresh)."""
    if session is not None:
        return _pause(session, refused_id, refusal, now, lambda _cid: True)
    with contextlib.ExitStack() as held:

        def free(connection_id: str) -> bool:  # held until the transaction below has committed
            try:
                held.enter_context(sqlite_refresh_lock(db, connection_id, timeout_s=0))
            except RefreshLockTimeoutError:
                return False
            return True

        try:
            with db.locked_session() as locked:
                return _pause(locked, refused_id, refusal, now, free)
        except SQLAlchemyError as exc:
            failure = type(exc).__name__
            logger.error("connection %s: pausing the connections sharing its client failed (%s)", refused_id, failure)
            return []


def _pause(session: Session, refused_id: str, refusal: ClientRefusal, now: datetime, free: _Free) -> list[str]:
    """Pause the active connections sharing the refused one's credentials (see the module docstring)."""
    refused = session.get(Connection, refused_id)
    if refused is None or refused.status != ConnectionStatus.CLIENT_REJECTED:
        return []  # changed meanwhile (disconnected, or another refresh won): nothing to spread
    stmt = (
        select(Connection)
        .where(
            Connection.tenant_id == refused.tenant_id,
            Connection.provider_id == refused.provider_id,
            Connection.client_id == refused.client_id,
            Connection.status == ConnectionStatus.ACTIVE,
            Connection.id != refused.id,
            or_(
                Connection.token_endpoint == refusal.token_endpoint,
                and_(Connection.token_endpoint.is_(None), Connection.fhir_base == refused.fhir_base),
            ),
        )
        .order_by(Connection.id)
    )
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update(skip_locked=True)  # a row being refreshed now gets its own answer
    detail: dict[str, object] = {
        "reason": SAME_CLIENT_REFUSED,
        "refused_connection_id": refused.id,
        "refused_at": refused.updated_at.isoformat(),  # when its refusal was recorded
        "grant": refusal.grant,
        "error_code": refusal.error_code,
        "auth_method": refusal.auth_method,
        "check": refusal.check,
    }
    paused: list[str] = []
    for conn in session.scalars(stmt).all():
        if not free(conn.id):
            continue
        conn.status = ConnectionStatus.CLIENT_REJECTED
        conn.updated_at = now
        audit_connection(session, conn, action=PAUSED_ACTION, outcome="client_rejected", detail=detail)
        paused.append(conn.id)
    if paused:
        logger.warning(
            "connection %s: the EHR refused the client's authentication; %d other connection(s) using the same "
            "client credentials paused (client_rejected) without a request",
            refused.id,
            len(paused),
        )
    return paused
