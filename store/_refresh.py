"""The locked refresh: one process refreshes, the others reuse its committed result.

Each refresh runs in three steps: *prepare* (read the rows, decide, gather what the grant needs), *grant* (the
HTTP call to the token server) and *apply* (store the tokens, or the needs-reauth status, and the audit row).
How they are serialized depends on the app database:

- PostgreSQL: all three in one transaction holding ``SELECT ... FOR UPDATE`` on the connection's rows; other
  connections and every other writer carry on.
- SQLite: a write transaction locks the whole database, so holding one across the grant would stall every
  writer of every process for as long as the token server takes. There a per-connection file lock beside the
  database file serializes refreshers instead; prepare is a read (WAL readers block nobody), the grant runs with
  no transaction open, and apply is a short ``BEGIN IMMEDIATE`` that re-checks the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import (
    EhrSyncError,
    InvalidGrantError,
    NeedsReauthError,
    OAuthError,
    TemporarilyUnavailableError,
    TransportError,
)
from connectors.smart import TokenResponse, client_credentials_grant, refresh_grant
from store._grants import GrantContext, with_retry
from store._refresh_lock import RefreshLockTimeoutError, sqlite_refresh_lock
from store._states import AFTER_401_MARK, check_status, fresh_after_401
from store.audit import record_audit
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.errors import ClientRejectedError
from store.models import Connection, ConnectionKind, ConnectionStatus, TokenRecord
from store.tokenrows import open_field, write_tokens

__all__ = ["RefreshLockTimeoutError", "check_status", "lock_row", "needs_refresh", "run_locked_refresh"]

logger = logging.getLogger(__name__)

MIN_REMAINING = timedelta(seconds=60)
REFRESH_FRACTION = 0.2
# Longer than a grant with its retries can take; past it the other process is presumed stuck.


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


def needs_refresh(row: TokenRecord, now: datetime) -> bool:
    """SAL-23: refresh when less than 20 % of the lifetime or less than 60 s is left (never above half)."""
    lifetime = max(row.expires_at - row.issued_at, timedelta(0))
    threshold = min(max(lifetime * REFRESH_FRACTION, MIN_REMAINING), lifetime / 2)
    return row.expires_at - now <= threshold


@dataclass(frozen=True)
class _Outcome:
    """What a refresh came to: a token to hand out and/or an error to raise, plus what ``apply`` must write."""

    token: str | None = None
    error: EhrSyncError | None = None
    response: TokenResponse | None = None  # store these tokens
    needs_reauth: bool = False
    new_status: str | None = None  # a status to set besides needs_reauth (client_rejected)
    after_unauthorized: bool = False  # the grant answered a 401: the new token is marked as such
    audit: tuple[str, dict[str, object]] | None = None  # (outcome, detail) of the token.refresh audit row
    basis: int | None = None  # the tokens row version prepare read (None: no row); apply writes only onto it

    @property
    def writes(self) -> bool:
        """Whether ``apply`` has anything to store (tokens, a status or an audit row)."""
        return self.response is not None or self.needs_reauth or self.new_status is not None or self.audit is not None


@dataclass(frozen=True)
class _Grant:
    """Everything the HTTP call needs, gathered while the rows were read."""

    call: Callable[[], TokenResponse]
    name: str
    current: str | None
    still_valid: bool
    basis: int | None
    after_unauthorized: bool = False


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
    """Refresh (or mint, for backend connections) unless another process already did; errors are raised after
    the status and audit changes are committed."""
    if db.dialect == "sqlite":
        with sqlite_refresh_lock(db, connection_id):
            with db.session() as session:
                step = _prepare(session, cipher, grants, connection_id, rejected, force, clock)
            outcome = step if isinstance(step, _Outcome) else _grant(step, grants, connection_id)
            if outcome.writes:
                with db.locked_session() as session:
                    outcome = _apply(session, cipher, connection_id, outcome, clock)
    else:
        with db.locked_session() as session:
            lock_row(session, connection_id)
            step = _prepare(session, cipher, grants, connection_id, rejected, force, clock)
            outcome = step if isinstance(step, _Outcome) else _grant(step, grants, connection_id)
            outcome = _apply(session, cipher, connection_id, outcome, clock)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.token is not None
    return outcome.token


def _prepare(
    session: Session,
    cipher: TokenCipher,
    grants: GrantContext,
    connection_id: str,
    rejected: str | None,
    force: bool,
    clock: Callable[[], datetime],
) -> _Outcome | _Grant:
    """Read the rows and decide: a token as it stands, an outcome without a grant, or the grant to make."""
    conn = session.scalar(select(Connection).where(Connection.id == connection_id))
    if conn is None:
        raise NeedsReauthError(f"no connection with id {connection_id!r}")
    check_status(conn)
    row = session.scalar(
        select(TokenRecord).where(TokenRecord.connection_id == connection_id).execution_options(populate_existing=True)
    )
    now = clock()
    current = open_field(cipher, row, "access_token") if row is not None else None
    if current is not None and row is not None and not force:
        if rejected is not None and current != rejected:
            logger.info("connection %s: token already refreshed by another worker", connection_id)
            return _Outcome(token=current)
        if rejected is None and not needs_refresh(row, now):
            return _Outcome(token=current)
    backend = conn.kind in (ConnectionKind.BACKEND, ConnectionKind.GROUP)
    name = "client_credentials" if backend else "refresh_token"
    still_valid = row is not None and rejected is None and row.expires_at > now
    basis = row.version if row is not None else None
    if backend and row is not None and rejected is not None and rejected == current and fresh_after_401(row, now):
        return _client_rejected(conn.id, basis)
    if not backend and (row is None or row.refresh_token_ct is None):
        if still_valid and current is not None:
            logger.info("connection %s: no refresh token; using the current token until it expires", conn.id)
            return _Outcome(token=current)
        return _Outcome(
            error=NeedsReauthError(f"connection {conn.id} has no refresh token: re-authorization required"),
            needs_reauth=True,
            audit=("needs_reauth", {"grant": name, "reason": "no_refresh_token"}),
            basis=basis,
        )
    try:  # discovery of the token endpoint can fail like the grant itself: same fallback
        endpoint = grants.token_endpoint(conn)
        auth = grants.client_auth(session, conn)
        scope = grants.backend_scope(session, conn) if backend else None
    except (TransportError, TemporarilyUnavailableError) as exc:
        return _transient(exc, name, current, still_valid, basis, connection_id)
    call: Callable[[], TokenResponse]
    if scope is not None:
        call = partial(client_credentials_grant, endpoint, http=grants.http, client_auth=auth, scope=scope, clock=clock)
    else:
        assert row is not None
        refresh_token = open_field(cipher, row, "refresh_token")
        call = partial(
            refresh_grant, endpoint, http=grants.http, client_auth=auth, refresh_token=refresh_token, clock=clock
        )
    return _Grant(call, name, current, still_valid, basis, after_unauthorized=backend and rejected is not None)


def _client_rejected(connection_id: str, basis: int | None) -> _Outcome:
    """A 401 on a token re-acquired because of a 401: a third mint would be refused too (issue 10)."""
    return _Outcome(
        error=ClientRejectedError(
            f"connection {connection_id}: the EHR refused a freshly re-acquired client_credentials token (401); "
            "check the client registration (client id, key/JWKS, scopes)"
        ),
        new_status=ConnectionStatus.CLIENT_REJECTED,
        audit=("client_rejected", {"grant": "client_credentials", "error_code": "client_rejected"}),
        basis=basis,
    )


def _transient(
    exc: EhrSyncError, name: str, current: str | None, still_valid: bool, basis: int | None, connection_id: str
) -> _Outcome:
    """A network failure or ``temporarily_unavailable``: keep a still-valid token, else report the error."""
    audit: tuple[str, dict[str, object]] = ("transient_failure", {"grant": name, "error_code": exc.code})
    if still_valid and current is not None:
        logger.warning("connection %s: refresh failed transiently; keeping the current token", connection_id)
        return _Outcome(token=current, audit=audit, basis=basis)
    return _Outcome(error=exc, audit=audit, basis=basis)


def _grant(grant: _Grant, grants: GrantContext, connection_id: str) -> _Outcome:
    """Make the grant (retrying transient failures) and classify its answer; no database access here."""
    detail: dict[str, object] = {"grant": grant.name}
    try:
        response = with_retry(grant.call, grants.retry, grants.sleep, f"{grant.name} for connection {connection_id}")
    except InvalidGrantError as exc:
        return _Outcome(
            error=NeedsReauthError(
                f"connection {connection_id}: refresh refused ({exc.error}): re-authorization required"
            ),
            needs_reauth=True,
            audit=("needs_reauth", {**detail, "error_code": exc.error, "status_code": exc.status}),
            basis=grant.basis,
        )
    except (TransportError, TemporarilyUnavailableError) as exc:
        return _transient(exc, grant.name, grant.current, grant.still_valid, grant.basis, connection_id)
    except OAuthError as exc:
        audit = ("failure", {**detail, "error_code": exc.error, "status_code": exc.status})
        return _Outcome(error=exc, audit=audit, basis=grant.basis)
    if grant.after_unauthorized:
        detail["after_unauthorized"] = True
    return _Outcome(
        token=response.access_token,
        response=response,
        audit=("success", detail),
        basis=grant.basis,
        after_unauthorized=grant.after_unauthorized,
    )


def _apply(
    session: Session, cipher: TokenCipher, connection_id: str, outcome: _Outcome, clock: Callable[[], datetime]
) -> _Outcome:
    """Write what the outcome says (tokens, needs-reauth status, audit row) in the caller's write transaction;
    returns the outcome to report, which differs only when the connection was disconnected meanwhile."""
    if not outcome.writes:
        return outcome
    row = lock_row(session, connection_id)
    conn = session.scalar(select(Connection).where(Connection.id == connection_id))
    if conn is None:
        logger.info("connection %s was removed during its token refresh; nothing stored", connection_id)
        return _Outcome(error=NeedsReauthError(f"connection {connection_id} was removed during its refresh"))
    version = row.version if row is not None else None
    if conn.status != ConnectionStatus.ACTIVE or version != outcome.basis:
        # SQLite: the rows changed while the grant was in flight (a disconnect, deleted tokens, a new
        # authorization). Their change stands; this answer is dropped, and the audit says a grant happened.
        detail = {**(outcome.audit[1] if outcome.audit else {}), "status": conn.status, "dropped": True}
        record_audit(
            session,
            action="token.refresh",
            outcome="dropped",
            tenant_id=conn.tenant_id,
            connection_id=conn.id,
            detail=detail,
        )
        logger.info("connection %s changed during its token refresh; the answer is dropped", connection_id)
        if conn.status == ConnectionStatus.ACTIVE and row is not None:
            return _Outcome(token=open_field(cipher, row, "access_token"))
        return _Outcome(error=NeedsReauthError(f"connection {connection_id} is {conn.status}: authorize again"))
    now = clock()
    detail = dict(outcome.audit[1]) if outcome.audit else {}
    if outcome.needs_reauth:
        conn.status = ConnectionStatus.NEEDS_REAUTH
        conn.updated_at = now
    if outcome.new_status is not None:
        conn.status = outcome.new_status
        conn.updated_at = now
    if outcome.response is not None:
        response = outcome.response
        new_row = write_tokens(session, cipher, conn, row, response, now=now)
        new_row.launch_context = {**(new_row.launch_context or {}), AFTER_401_MARK: outcome.after_unauthorized}
        detail.update(rotated=bool(response.refresh_token), expires_in=response.expires_in, version=new_row.version)
        logger.info("connection %s: %s grant succeeded (version %d)", conn.id, detail.get("grant"), new_row.version)
    if outcome.audit is not None:
        record_audit(
            session,
            action="token.refresh",
            outcome=outcome.audit[0],
            tenant_id=conn.tenant_id,
            connection_id=conn.id,
            detail=detail,
        )
    return outcome
