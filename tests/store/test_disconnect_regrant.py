"""A patient's new authorization that takes the connection over while a disconnect of it is revoking its tokens.

The disconnect reads the tokens and revokes them at the EHR with no lock held (the revocation may take as long as
the EHR does), then deletes the row and marks the connection disconnected. A re-authorization committed in between
(``auth_service.services.reauthorization``: same patient and user, the connection active) stored a new grant on the
row: the disconnect must still win (never revived) and must revoke that grant too, not delete its tokens unrevoked
while telling the person every token was revoked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from store import AppDatabase, TokenCipher
from store._refresh import lock_row
from store.models import AuditEvent, Connection, ConnectionStatus, utcnow
from store.regrant import replace_grant
from tests.store.test_store_vault import seeded, status, token
from tests.store.tokenserver import RunningTokenServer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sal34_a_grant_stored_during_a_disconnect_is_revoked_too_and_the_connection_stays_disconnected(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """Before, the new grant's tokens were deleted without a revocation (valid at the EHR until they expired,
    nobody holding them) and the disconnect answered ``revoked_at_server`` true."""
    vault = seeded(db, cipher, token_server, left=3600)
    regranted: list[bool] = []

    def regrant(response: httpx.Response) -> None:  # the first revocation answered: a new sign-in commits now
        if response.request.url.path.endswith("/revoke") and not regranted:
            regranted.append(True)
            with db.locked_session() as session:
                lock_row(session, "c1")
                conn = session.get(Connection, "c1")
                assert conn is not None
                replace_grant(session, cipher, conn, token("at-new", "rt-new", 3600), now=utcnow())
                conn.reauthorized_at = utcnow()

    http: Any = vault._http
    http.event_hooks["response"].append(regrant)
    revocation = vault.disconnect("c1")
    assert regranted and status(db) == ConnectionStatus.DISCONNECTED and vault.token_info("c1") is None
    assert ("refresh_token", "rt-new") in token_server.state.revoked  # before: never revoked
    assert ("access_token", "at-new") in token_server.state.revoked
    assert ("refresh_token", "rt-0") in token_server.state.revoked and revocation.revoked
    with db.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")).all()
        assert [e.outcome for e in events] == ["success"]
