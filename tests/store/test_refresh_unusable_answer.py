"""A refresh answered HTTP 200 with a body ehrsync cannot use (SAL-15: no ``access_token``, no Bearer ``token_type``,
``expires_in`` zero or not a number), against the sandbox over a real socket (the ``token_answer`` fault), on SQLite
and PostgreSQL, with reuse detection on: a refresh with a spent refresh token revokes the whole grant.

The EHR did grant: the refresh token the answer carries is live and the one sent is spent. Before, the answer was
dropped whole, so the next refresh sent the spent token, was refused ``invalid_grant`` and the patient had to sign in
again. Now the rotated refresh token is kept (sealed, in the refresh's own transaction, audited), the refresh fails
with an ``UnusableTokenAnswerError`` naming what was wrong, and the next refresh works with the kept token."""

from __future__ import annotations

import logging
import threading
import uuid

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import UnusableTokenAnswerError
from connectors.smart import TokenResponse, discover, new_pkce
from sandbox import SandboxServer
from store import AppDatabase, RetryPolicy, TokenCipher, TokenVault
from store.models import AuditEvent, TokenRecord
from store.tokenrows import open_field
from tests.store.conftest import add_connection
from tests.store.launch import authorize_code, exchange, register_public_client
from tests.store.test_store_vault import status

#: the fault's variant -> what the error must name
PROBLEMS = {
    "no_token_type": "unsupported token_type None (expected Bearer)",
    "no_access_token": "token response lacks 'access_token'",
    "expires_in_zero": "token response field 'expires_in' must be positive",
    "expires_in_text": "token response field 'expires_in' must be a number",
}


def _connected(sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher) -> tuple[TokenVault, TokenResponse]:
    """Connection c1 of a public client signed in at the sandbox (refresh tokens rotate, reuse revokes the grant)."""
    sandbox.admin.settings(refresh_mode="reuse_detection")
    http = httpx.Client(timeout=30)
    client_id = f"unusable-{uuid.uuid4().hex[:8]}"
    register_public_client(sandbox, client_id)
    cfg = discover(sandbox.fhir_base, http=http)
    pkce = new_pkce()
    code = authorize_code(http, sandbox, cfg, client_id=client_id, state="state-1", code_challenge=pkce.challenge)
    tokens = exchange(http, cfg, client_id, code, pkce.verifier)
    assert tokens.refresh_token
    add_connection(db, fhir_base=sandbox.fhir_base, client_id=client_id)
    vault = TokenVault(db, cipher, http, retry=RetryPolicy(attempts=3, base_delay_s=0.0))
    vault.save_token_response("c1", tokens)
    return vault, tokens


def _stored(db: AppDatabase, cipher: TokenCipher) -> tuple[int, str, str]:
    """The tokens row's version, refresh token and access token."""
    with db.session() as s:
        row = s.get(TokenRecord, "c1")
        assert row is not None
        return row.version, open_field(cipher, row, "refresh_token"), open_field(cipher, row, "access_token")


def _refresh_events(db: AppDatabase) -> list[tuple[str, dict[str, object]]]:
    with db.session() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == "token.refresh").order_by(AuditEvent.id)
        return [(e.outcome, dict(e.detail or {})) for e in s.scalars(stmt)]


@pytest.mark.parametrize("variant", sorted(PROBLEMS))
def test_sal24_an_unusable_200_refresh_answer_keeps_its_rotated_refresh_token(
    sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh fails loudly (the error names the problem, no value); the rotated refresh token is stored, the
    access token untouched; the next refresh sends the kept token and succeeds, the connection stays active. Before,
    that next refresh sent the spent token: ``invalid_grant``, ``needs_reauth``."""
    caplog.set_level(logging.DEBUG)
    vault, tokens = _connected(sandbox, db, cipher)
    sandbox.admin.set_fault("token_answer", error=variant, path="/oauth/token")
    with pytest.raises(UnusableTokenAnswerError) as failed:
        vault.force_refresh("c1")
    message = str(failed.value)
    assert message == (
        f"invalid_response: refresh grant: the token endpoint's HTTP 200 answer is unusable: {PROBLEMS[variant]}"
    )
    assert failed.value.rotated_refresh_token is None  # handed to the vault, not to whoever logs the error
    version, kept, access = _stored(db, cipher)
    assert (version, access) == (2, tokens.access_token) and kept != tokens.refresh_token
    assert status(db) == "active"
    [(outcome, detail)] = _refresh_events(db)
    assert (outcome, detail) == (
        "failure",
        {
            "grant": "refresh_token",
            "error_code": "invalid_response",
            "status_code": 200,
            "rotated_kept": True,
            "version": 2,
        },
    )

    fresh = vault.force_refresh("c1")  # with the kept refresh token: the grant is alive
    assert fresh != tokens.access_token and status(db) == "active"
    assert _stored(db, cipher)[0] == 3 and _stored(db, cipher)[1] not in (kept, tokens.refresh_token)
    assert [outcome for outcome, _ in _refresh_events(db)] == ["failure", "success"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "the refresh token it rotated to is kept" in logged
    for secret in (tokens.access_token, tokens.refresh_token, kept, fresh):
        assert secret not in logged and secret not in message and secret not in repr(failed.value)
        assert secret not in str(_refresh_events(db))


def test_sal23_sal24_two_workers_after_a_401_the_second_refreshes_with_the_kept_token(
    sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher
) -> None:
    """Two workers refused the same access token (401) refresh under the refresh lock: the first gets the unusable
    answer and keeps its rotated refresh token; the second, still holding a rejected token, refreshes after it with
    the kept one (a spent one would revoke the grant) and gets a working token. One failure, one success."""
    vault, tokens = _connected(sandbox, db, cipher)
    sandbox.admin.set_fault("token_answer", error="no_token_type", path="/oauth/token")
    barrier = threading.Barrier(2)
    results: list[str] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        try:
            results.append(vault.token_source("c1").refresh_after_unauthorized(tokens.access_token))
        except UnusableTokenAnswerError as exc:
            results.append(exc.error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results, key=lambda r: r != "invalid_response")[0] == "invalid_response"
    [fresh] = [r for r in results if r != "invalid_response"]
    assert fresh != tokens.access_token and status(db) == "active"
    assert [outcome for outcome, _ in _refresh_events(db)] == ["failure", "success"]
    assert vault.force_refresh("c1") != fresh  # the grant survived: no reuse was detected
