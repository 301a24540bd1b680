"""Disconnecting a connection: its tokens revoked at the EHR (SAL-34), then deleted, the connection ``disconnected``.

The revocation runs with no lock held (it takes as long as the EHR does), so the tokens row can change meanwhile: a
patient's new authorization may take the connection over (``auth_service.services.reauthorization``: a new grant,
which revoking the old refresh token does not end) or a refresh may rotate its tokens. The row is deleted only
under the version that was revoked; a newer one is revoked in its turn first (at most ``ROUNDS`` revocations, then
it is deleted as it stands). The disconnect always wins: the connection is never left active.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from store._grants import GrantContext
from store._refresh_apply import lock_row
from store.audit import record_audit
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.errors import UnknownConnectionError
from store.models import Connection, ConnectionStatus, TokenRecord
from store.revocation import Revocation, revoke_at_server

__all__ = ["ROUNDS", "disconnect", "find_connection"]

#: Revocations one disconnect makes at most (each of a newer tokens row stored while the one before was revoked).
ROUNDS = 3


def disconnect(
    db: AppDatabase, grants: GrantContext, cipher: TokenCipher, clock: Callable[[], datetime], connection_id: str
) -> Revocation:
    """Revoke (refresh then access token, where the server offers it), delete, mark disconnected; audited
    ``token.revoke`` (``local_only`` unless every round revoked). What the answer reports is the first round that
    did not revoke, else the last one."""
    rounds: list[Revocation] = []
    while True:
        with db.session() as session:
            conn = find_connection(session, connection_id)
            row = session.get(TokenRecord, connection_id)
            revoked_version = row.version if row is not None else None
            rounds.append(revoke_at_server(grants, cipher, session, conn, row) if row else Revocation("no_tokens"))
        with db.locked_session() as session:
            row = lock_row(session, connection_id)
            if row is not None and row.version != revoked_version and len(rounds) < ROUNDS:
                continue  # tokens stored while those were revoked (a re-authorization, a refresh): revoke them too
            conn = find_connection(session, connection_id)
            if row is not None:
                session.delete(row)
            conn.status = ConnectionStatus.DISCONNECTED
            conn.updated_at = conn.disconnected_at = clock()  # disconnected_at: the retention clock
            revocation = next((r for r in rounds if r.outcome not in ("revoked", "no_tokens")), rounds[-1])
            record_audit(
                session,
                action="token.revoke",
                outcome="success" if revocation.revoked else "local_only",
                tenant_id=conn.tenant_id,
                connection_id=connection_id,
                detail=revocation.audit_detail(),
            )
            return revocation


def find_connection(session: Session, connection_id: str) -> Connection:
    """The connection, or ``UnknownConnectionError``."""
    conn = session.scalar(select(Connection).where(Connection.id == connection_id))
    if conn is None:
        raise UnknownConnectionError(f"no connection with id {connection_id!r}")
    return conn
