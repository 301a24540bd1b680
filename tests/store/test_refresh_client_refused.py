"""A patient connection's refresh refused with ``invalid_client`` (RFC 6749 §5.2: the client's authentication failed)
on SQLite and PostgreSQL, against a real token server whose registered client secret was rotated.

The refusal is the app's credentials, not the patient's grant: the connection is ``client_rejected`` (never
``needs_reauth``: no re-authorization link), the refresh token is kept (the server refused the client before it
looked at the token), nothing is asked again until an admin retries, and that retry (``TokenVault.reactivate``)
refreshes with the stored refresh token, making the connection active only if that works."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from store import AppDatabase, RetryPolicy, TokenCipher, TokenVault, save_provider_config
from store.errors import ClientRejectedError
from store.models import AuditEvent, TokenRecord
from store.tokenrows import open_field
from tests.store.conftest import add_connection
from tests.store.test_store_vault import status, token
from tests.store.tokenserver import RunningTokenServer

OLD, NEW = "secret-before-rotation", "secret-after-rotation"


def _set_secret(db: AppDatabase, cipher: TokenCipher, secret: str) -> None:
    """The tenant's provider config: ``client_secret_basic`` with ``secret`` (sealed at rest)."""
    with db.session() as s, s.begin():
        config = {"auth_method": "client_secret_basic", "client_secret": secret}
        save_provider_config(s, cipher, tenant_id="t1", provider_id="generic", config=config)


def _confidential(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer) -> TokenVault:
    """Connection c1 (a patient's, at-0/rt-0 with 30 s left: due for a refresh) of a client_secret_basic client whose
    secret the EHR has rotated: the provider config still holds the old one."""
    add_connection(db, fhir_base=server.fhir_base, token_endpoint=server.token_endpoint)
    _set_secret(db, cipher, OLD)
    server.state.client_secret = NEW
    server.state.valid_refresh.add("rt-0")
    vault = TokenVault(db, cipher, httpx.Client(timeout=10), retry=RetryPolicy(attempts=3, base_delay_s=0.0))
    vault.save_token_response("c1", token("at-0", "rt-0", 3600, left=30))
    return vault


def _refresh_events(db: AppDatabase) -> list[tuple[str, dict[str, object]]]:
    with db.session() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == "token.refresh").order_by(AuditEvent.id)
        return [(e.outcome, dict(e.detail or {})) for e in s.scalars(stmt)]


def _tokens(db: AppDatabase, cipher: TokenCipher) -> tuple[int, str]:
    with db.session() as s:
        row = s.get(TokenRecord, "c1")
        assert row is not None
        return row.version, open_field(cipher, row, "refresh_token")


def test_a_refresh_refused_invalid_client_is_client_rejected_keeping_the_refresh_token(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """One refused refresh: ``client_rejected`` with an audit row saying the client's authentication was refused and
    what to check (no secret, no token), the tokens row untouched, no retry; later uses answer the state without a
    token request. Before, it was a plain failure: the connection stayed active and every use asked again."""
    vault = _confidential(db, cipher, token_server)
    with pytest.raises(ClientRejectedError) as refused:
        vault.get_access_token("c1")
    message = str(refused.value)
    assert "refused the client's authentication on the refresh_token grant (invalid_client: client authenti" in message
    assert "client secret in the provider config" in message and "need not authorize again" in message
    assert "POST /api/integrations/smart/refresh" in message
    assert status(db) == "client_rejected"
    assert token_server.state.count("refresh_token") == 1  # final: not retried like a 503
    assert _tokens(db, cipher) == (1, "rt-0")  # the refresh token kept: the server never took it
    [(outcome, detail)] = _refresh_events(db)
    assert outcome == "client_rejected"
    assert detail["reason"] == "client_auth_refused" and detail["error_code"] == "invalid_client"
    assert detail["auth_method"] == "client_secret_basic" and detail["status_code"] == 401
    assert "client secret" in str(detail["check"])
    for secret in (OLD, NEW, "rt-0", "at-0"):
        assert secret not in str(detail) and secret not in message

    for use in (vault.get_access_token, vault.force_refresh):
        with pytest.raises(ClientRejectedError, match=r"is client_rejected: .*client's authentication .*client secret"):
            use("c1")  # the state answers: nothing sent with the same bad credentials
    assert token_server.state.count("refresh_token") == 1
    assert len(_refresh_events(db)) == 1


def test_the_admins_retry_refreshes_with_the_kept_token_and_is_active_only_if_accepted(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """The admin retries before fixing the secret: refused again, still ``client_rejected`` (one more request, no
    retry loop). After fixing it: one refresh with the stored refresh token rt-0, the new tokens stored, active."""
    vault = _confidential(db, cipher, token_server)
    with pytest.raises(ClientRejectedError):
        vault.get_access_token("c1")

    with pytest.raises(ClientRejectedError, match="refused the client's authentication"):
        vault.reactivate("c1")  # nothing fixed yet
    assert status(db) == "client_rejected"
    assert token_server.state.count("refresh_token") == 2
    assert _tokens(db, cipher) == (1, "rt-0")

    _set_secret(db, cipher, NEW)  # the admin puts the rotated secret into the provider config
    assert vault.reactivate("c1") == "at-1"
    assert status(db) == "active"
    assert token_server.state.grants[-1]["form"]["refresh_token"] == "rt-0"  # the kept refresh token worked
    assert _tokens(db, cipher) == (2, "rt-1")
    assert vault.get_access_token("c1") == "at-1"
    assert [outcome for outcome, _ in _refresh_events(db)] == ["client_rejected", "client_rejected", "success"]


@pytest.mark.parametrize("answer", [(429, "invalid_client"), (503, "invalid_client")], ids=["429", "503"])
def test_invalid_client_on_a_throttle_or_an_outage_is_not_a_refusal(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, answer: tuple[int, str]
) -> None:
    """A 429 or 5xx whose body says ``invalid_client`` is the EHR throttling or failing, not refusing the client: it
    is retried, the still-valid token is kept, the connection stays active and the next use asks again."""
    vault = _confidential(db, cipher, token_server)
    _set_secret(db, cipher, NEW)
    token_server.state.answer_next = [(answer[0], {"error": answer[1]})] * 3  # every attempt of the vault's retries
    assert vault.get_access_token("c1") == "at-0"
    assert status(db) == "active" and token_server.state.count("refresh_token") == 3
    assert vault.get_access_token("c1") == "at-1"  # the EHR answers again: refreshed with rt-0
