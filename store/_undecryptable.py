"""The ``token_undecryptable`` state: set on an integrity failure under a configured key, cleared when the
stored token opens again (issue 10).

An unknown key id is a configuration problem of the process that met it (one worker deployed without
``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation), so it never changes the shared state; only a ciphertext
that fails authentication under a key this process has (altered, or moved from another row) does.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from store._refresh import lock_row
from store.audit import audit_connection
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.errors import TokenKeyMissingError, TokenUndecryptableError
from store.models import Connection, ConnectionStatus, TokenRecord
from store.tokenrows import TOKEN_FIELDS, open_field

__all__ = ["mark_undecryptable", "recover_if_decryptable"]

logger = logging.getLogger(__name__)


def mark_undecryptable(session: Session, conn: Connection, exc: TokenUndecryptableError, now: datetime) -> None:
    """An active connection whose token failed authentication becomes ``token_undecryptable`` (audited, once);
    a missing key id (``TokenKeyMissingError``) leaves the status as it is."""
    if isinstance(exc, TokenKeyMissingError) or conn.status != ConnectionStatus.ACTIVE:
        return
    _set_status(session, conn, ConnectionStatus.TOKEN_UNDECRYPTABLE, now, "failure", {"error_code": exc.code})
    logger.error("connection %s: stored token fails authentication: status token_undecryptable", conn.id)


def recover_if_decryptable(db: AppDatabase, cipher: TokenCipher, connection_id: str, now: datetime) -> bool:
    """A ``token_undecryptable`` connection whose stored fields all open again (e.g. the row was restored from
    a backup) is ``active`` again (audit ``token.decrypt`` ``recovered``); True when that happened."""
    with db.locked_session() as session:
        row = lock_row(session, connection_id)
        conn = session.scalar(select(Connection).where(Connection.id == connection_id))
        return conn is not None and row is not None and _reopen(session, cipher, conn, row, now)


def _reopen(session: Session, cipher: TokenCipher, conn: Connection, row: TokenRecord, now: datetime) -> bool:
    if conn.status != ConnectionStatus.TOKEN_UNDECRYPTABLE:
        return False
    try:
        for field in TOKEN_FIELDS:
            if getattr(row, f"{field}_ct") is not None:
                open_field(cipher, row, field)
    except TokenUndecryptableError:
        return False
    _set_status(session, conn, ConnectionStatus.ACTIVE, now, "recovered", {"status": ConnectionStatus.ACTIVE})
    logger.info("connection %s: stored token decrypts again: status active", conn.id)
    return True


def _set_status(
    session: Session, conn: Connection, status: str, now: datetime, outcome: str, detail: dict[str, str]
) -> None:
    """The connection's new status, stamped and audited as a ``token.decrypt`` event in the same transaction."""
    conn.status = status
    conn.updated_at = now
    audit_connection(session, conn, action="token.decrypt", outcome=outcome, detail=detail)
