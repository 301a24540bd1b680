"""The locked refresh: one process refreshes, the others reuse its committed result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth_service.store._grants import GrantContext, with_retry
from auth_service.store.audit import record_audit
from auth_service.store.crypto import TokenCipher
from auth_service.store.database import AppDatabase
from auth_service.store.models import Connection, ConnectionKind, ConnectionStatus, TokenRecord
from auth_service.store.tokenrows import open_field, write_tokens
from connectors.errors import (
    EhrSyncError,
    InvalidGrantError,
    NeedsReauthError,
    OAuthError,
    TemporarilyUnavailableError,
    TransportError,
)
from connectors.smart import TokenResponse, client_credentials_grant, refresh_grant

__all__ = ["check_status", "lock_row", "needs_refresh", "run_locked_refresh"]

logger = logging.getLogger(__name__)

MIN_REMAINING = timedelta(seconds=60)
REFRESH_FRACTION = 0.2


def lock_row(session: Session, connection_id: str) -> TokenRecord | None:
    """Lock the connection row, then return its tokens row, both ``FOR UPDATE`` for this transaction.

    The connection row always exists, so the lock also serializes the first token of a connection (a
    backend mint), when there is no tokens row to lock yet. SQLite already holds the write lock.
    """
    session.execute(select(Connection.id).where(Connection.id == connection_id).with_for_update())
    stmt = (
        select(TokenRecord)
        .where(TokenRecord.connection_id == connection_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


def check_status(conn: Connection) -> None:
    if conn.status != ConnectionStatus.ACTIVE:
        raise NeedsReauthError(f"connection {conn.id} is {conn.status}: a person must authorize again")


def needs_refresh(row: TokenRecord, now: datetime) -> bool:
    """SAL-23: refresh when less than 20 % of the lifetime or less than 60 s is left (never above half)."""
    lifetime = max(row.expires_at - row.issued_at, timedelta(0))
    threshold = min(max(lifetime * REFRESH_FRACTION, MIN_REMAINING), lifetime / 2)
    return row.expires_at - now <= threshold


def run_locked_refresh(
    db: AppDatabase,
    cipher: TokenCipher,
    grants: GrantContext,
    connection_id: str,
    *,
    rejected: str | None,
    force: bool,
    clock: Callable[[], datetime],
) -> str:
    """Refresh (or mint, for backend connections) under the lock; errors are raised after the commit."""
    failure: EhrSyncError | None = None
    token: str | None = None
    with db.locked_session() as session:
        row = lock_row(session, connection_id)
        conn = session.scalar(select(Connection).where(Connection.id == connection_id))
        if conn is None:
            raise NeedsReauthError(f"no connection with id {connection_id!r}")
        check_status(conn)
        now = clock()
        current = open_field(cipher, row, "access_token") if row is not None else None
        if current is not None and row is not None and not force:
            if rejected is not None and current != rejected:
                logger.info("connection %s: token already refreshed by another worker", connection_id)
                return current
            if rejected is None and not needs_refresh(row, now):
                return current
        token, failure = _refresh_in_lock(session, cipher, grants, conn, row, current, rejected, clock)
    if failure is not None:
        raise failure
    assert token is not None
    return token


def _refresh_in_lock(
    session: Session,
    cipher: TokenCipher,
    grants: GrantContext,
    conn: Connection,
    row: TokenRecord | None,
    current: str | None,
    rejected: str | None,
    clock: Callable[[], datetime],
) -> tuple[str | None, EhrSyncError | None]:
    """Do the grant; return (token, None) or (None, error) so the status/audit changes still commit."""
    backend = conn.kind in (ConnectionKind.BACKEND, ConnectionKind.GROUP)
    grant = "client_credentials" if backend else "refresh_token"
    still_valid = row is not None and rejected is None and row.expires_at > clock()

    def audit(outcome: str, **detail: object) -> None:
        record_audit(
            session,
            action="token.refresh",
            outcome=outcome,
            tenant_id=conn.tenant_id,
            connection_id=conn.id,
            detail={"grant": grant, **detail},
        )

    if not backend and (row is None or row.refresh_token_ct is None):
        if still_valid and current is not None:
            logger.info("connection %s: no refresh token; using the current token until it expires", conn.id)
            return current, None
        _mark_needs_reauth(conn, clock())
        audit("needs_reauth", reason="no_refresh_token")
        return None, NeedsReauthError(f"connection {conn.id} has no refresh token: re-authorization required")

    def call() -> TokenResponse:
        endpoint = grants.token_endpoint(conn)
        auth = grants.client_auth(session, conn)
        if backend:
            scope = grants.backend_scope(session, conn)
            return client_credentials_grant(endpoint, http=grants.http, client_auth=auth, scope=scope, clock=clock)
        assert row is not None
        refresh_token = open_field(cipher, row, "refresh_token")
        return refresh_grant(endpoint, http=grants.http, client_auth=auth, refresh_token=refresh_token, clock=clock)

    try:
        response = with_retry(call, grants.retry, grants.sleep, f"{grant} for connection {conn.id}")
    except InvalidGrantError as exc:
        _mark_needs_reauth(conn, clock())
        audit("needs_reauth", error_code=exc.error, status_code=exc.status)
        return None, NeedsReauthError(f"connection {conn.id}: refresh refused ({exc.error}): re-authorization required")
    except (TransportError, TemporarilyUnavailableError) as exc:
        audit("transient_failure", error_code=exc.code)
        if still_valid and current is not None:
            logger.warning("connection %s: refresh failed transiently; keeping the current token", conn.id)
            return current, None
        return None, exc
    except OAuthError as exc:
        audit("failure", error_code=exc.error, status_code=exc.status)
        return None, exc
    rotated = bool(response.refresh_token)
    new_row = write_tokens(session, cipher, conn, row, response, now=clock())
    audit("success", rotated=rotated, expires_in=response.expires_in, version=new_row.version)
    logger.info("connection %s: %s grant succeeded (version %d)", conn.id, grant, new_row.version)
    return response.access_token, None


def _mark_needs_reauth(conn: Connection, now: datetime) -> None:
    conn.status = ConnectionStatus.NEEDS_REAUTH
    conn.updated_at = now
