"""The *apply* step of a token refresh: write what it came to (tokens, status, audit row) onto the rows it read.

Kept apart from the decision (``_refresh``) so each stays readable; ``lock_row`` lives here because apply is the
step that must hold the connection's rows while it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from connectors.errors import EhrSyncError, NeedsReauthError, UnusableTokenAnswerError
from connectors.smart import TokenResponse
from store import _refresh_lock
from store._refresh_lock import RefreshLockTimeoutError
from store._same_client import ClientRefusal
from store._states import AFTER_401_MARK
from store.audit import audit_connection
from store.crypto import TokenCipher
from store.models import Connection, ConnectionStatus, TokenRecord
from store.tokenrows import keep_refresh_token, open_field, write_tokens

__all__ = ["RefreshOutcome", "apply_outcome", "lock_row", "unusable_answer_outcome"]

logger = logging.getLogger(__name__)
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: NOWAIT met a lock, or lock_timeout ran out


def lock_row(session: Session, connection_id: str, *, wait: bool = True) -> TokenRecord | None:
    """Lock the connection row, then return its tokens row, both ``FOR UPDATE`` for this transaction.

    The connection row always exists, so the lock also serializes the first token of a connection (a
    backend mint), when there is no tokens row to lock yet. SQLite already holds the write lock. On PostgreSQL
    the wait is bounded as SQLite's refresh lock is (``REFRESH_LOCK_TIMEOUT_S``, then ``RefreshLockTimeoutError``),
    and ``wait`` False is ``NOWAIT``: ``RefreshLockTimeoutError`` at once when another transaction holds either row.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    timeout_s = _refresh_lock.REFRESH_LOCK_TIMEOUT_S
    try:
        # the timeout covers only these two locks: later statements of the transaction (writing a rotated refresh
        # token) must not fail on a timeout after the EHR has answered (reset below)
        if postgres and wait:
            session.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(timeout_s * 1000))}ms'"))
        session.execute(select(Connection.id).where(Connection.id == connection_id).with_for_update(nowait=not wait))
        stmt = (
            select(TokenRecord)
            .where(TokenRecord.connection_id == connection_id)
            .with_for_update(nowait=not wait)
            .execution_options(populate_existing=True)
        )
        row = session.scalars(stmt).one_or_none()
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        held = f"has held its token for over {timeout_s:.0f}s" if wait else "holds its token"
        raise RefreshLockTimeoutError(f"connection {connection_id}: another transaction {held}") from exc
    if postgres and wait:
        session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
    return row


@dataclass(frozen=True)
class RefreshOutcome:
    """What a refresh came to: a token to hand out and/or an error to raise, plus what ``apply`` must write."""

    token: str | None = None
    error: EhrSyncError | None = None
    response: TokenResponse | None = None  # store these tokens
    needs_reauth: bool = False
    new_status: str | None = None  # a status to set besides needs_reauth (client_rejected)
    after_unauthorized: bool = False  # the grant answered a 401: the new token is marked as such
    audit: tuple[str, dict[str, object]] | None = None  # (outcome, detail) of the token.refresh audit row
    basis: int | None = None  # the tokens row version prepare read (None: no row); apply writes only onto it
    kept: EhrSyncError | None = None  # why the still-valid current token is handed out instead of a new one
    refusal: ClientRefusal | None = None  # the client's authentication refused: pause its siblings (``_same_client``)
    rotated_refresh_token: str | None = field(default=None, repr=False)  # store it alone: the rest was unusable

    @property
    def writes(self) -> bool:
        """Whether ``apply`` has anything to store (tokens, a status or an audit row)."""
        return self.response is not None or self.needs_reauth or self.new_status is not None or self.audit is not None


def apply_outcome(
    session: Session, cipher: TokenCipher, connection_id: str, outcome: RefreshOutcome, clock: Callable[[], datetime]
) -> RefreshOutcome:
    """Write what the outcome says (tokens, needs-reauth status, audit row) in the caller's write transaction;
    returns the outcome to report, which differs only when the connection was disconnected meanwhile."""
    if not outcome.writes:
        return outcome
    row = lock_row(session, connection_id)
    conn = session.scalar(select(Connection).where(Connection.id == connection_id))
    if conn is None:
        logger.info("connection %s was removed during its token refresh; nothing stored", connection_id)
        return RefreshOutcome(error=NeedsReauthError(f"connection {connection_id} was removed during its refresh"))
    version = row.version if row is not None else None
    if conn.status != ConnectionStatus.ACTIVE or version != outcome.basis:
        # SQLite: the rows changed while the grant was in flight (a disconnect, deleted tokens, a new
        # authorization). Their change stands; this answer is dropped, and the audit says a grant happened.
        detail = {**(outcome.audit[1] if outcome.audit else {}), "status": conn.status, "dropped": True}
        audit_connection(session, conn, action="token.refresh", outcome="dropped", detail=detail)
        logger.info("connection %s changed during its token refresh; the answer is dropped", connection_id)
        if conn.status == ConnectionStatus.ACTIVE and row is not None:
            return RefreshOutcome(token=open_field(cipher, row, "access_token"))
        return RefreshOutcome(error=NeedsReauthError(f"connection {connection_id} is {conn.status}: authorize again"))
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
    if outcome.rotated_refresh_token is not None and row is not None:
        keep_refresh_token(session, cipher, row, outcome.rotated_refresh_token, now=now)
        detail.update(rotated_kept=True, version=row.version)
        logger.warning(
            "connection %s: the refresh answer was unusable; the refresh token it rotated to is kept", conn.id
        )
    if outcome.audit is not None:
        audit_connection(session, conn, action="token.refresh", outcome=outcome.audit[0], detail=detail)
    return outcome


def unusable_answer_outcome(
    exc: UnusableTokenAnswerError, grant: str, basis: int | None, detail: dict[str, object]
) -> RefreshOutcome:
    """A 200 token answer ehrsync cannot use: the refresh fails with ``exc`` (it names the problem), but the grant
    happened at the EHR. A refresh token the answer rotated to is stored (sealed, onto the row read, with the audit
    row): at a server that rotates, the one sent is spent, and dropping the new one would end the connection in
    ``needs_reauth`` at the next refresh. The access token and its expiry stay as they were."""
    rotated = exc.rotated_refresh_token if grant == "refresh_token" else None  # a backend grant has none to keep
    exc.rotated_refresh_token = None  # the error is raised to callers who may log it whole: no token in it (SAL-38)
    audit = {**detail, "error_code": exc.error, "status_code": exc.status, "rotated_kept": False}
    return RefreshOutcome(error=exc, audit=("failure", audit), basis=basis, rotated_refresh_token=rotated)
