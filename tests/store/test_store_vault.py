"""Token vault against SQLite and PostgreSQL with a real token server (SAL-17, SAL-23..25, SAL-32, SAL-34)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, text

from connectors.errors import EhrSyncError, NeedsReauthError, TemporarilyUnavailableError
from connectors.smart import TokenResponse, parse_token_response
from connectors.tokens import TokenSource
from connectors.transport.tls import default_ssl_context
from store import (
    AppDatabase,
    RetryPolicy,
    TokenCipher,
    TokenVault,
    UnknownConnectionError,
    _refresh_lock,
    save_provider_config,
)
from store._refresh import RefreshLockTimeoutError, lock_row
from store.errors import ClientRejectedError, RefreshDeferredError
from store.models import AuditEvent, Connection, ConnectionStatus, TokenRecord
from tests.connectors.smart.keys import pem, rsa_key
from tests.store.conftest import add_connection
from tests.store.tokenserver import RunningTokenServer
from tests.store.workers import refresh_worker


def token(
    access: str, refresh: str | None, expires_in: int, scope: str | None = "patient/*.rs", *, left: int | None = None
) -> TokenResponse:
    """A parsed token answer; ``left`` seconds of lifetime remain (issued in the past) when given."""
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": expires_in}
    if refresh:
        body["refresh_token"] = refresh
    if scope:
        body["scope"] = scope
    body["patient"] = "p-1"
    issued = datetime.now(UTC) - timedelta(seconds=expires_in - left if left is not None else 0)
    return parse_token_response(body, clock=lambda: issued)


def make_vault(db: AppDatabase, cipher: TokenCipher, **kw: Any) -> TokenVault:
    kw.setdefault("retry", RetryPolicy(attempts=3, base_delay_s=0.0))
    kw.setdefault("sleep", lambda _s: None)
    return TokenVault(db, cipher, httpx.Client(timeout=10, verify=default_ssl_context()), **kw)


def seeded(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer, left: int = 30) -> TokenVault:
    """Connection c1 with at-0/rt-0 (a 3600 s token with ``left`` seconds remaining)."""
    add_connection(db, fhir_base=server.fhir_base)  # token endpoint found by discovery
    server.state.valid_refresh.add("rt-0")
    vault = make_vault(db, cipher)
    vault.save_token_response("c1", token("at-0", "rt-0", 3600, left=left))
    return vault


def add_backend_connection(
    db: AppDatabase, cipher: TokenCipher, fhir_base: str, *, token_endpoint: str | None = None
) -> None:
    """Backend connection ``c1`` whose provider config holds a fresh RSA key (``private_key_jwt``, SAL-32)."""
    add_connection(db, fhir_base=fhir_base, token_endpoint=token_endpoint, kind="backend", scopes="system/*.rs")
    with db.session() as s, s.begin():
        save_provider_config(
            s,
            cipher,
            tenant_id="t1",
            provider_id="generic",
            config={"auth_method": "private_key_jwt", "private_key_pem": pem(rsa_key()), "key_id": "kid-1"},
        )


def status(db: AppDatabase, connection_id: str = "c1") -> str:
    with db.session() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        return conn.status


def test_sal17_tokens_encrypted_at_rest_with_context(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server, left=3600)
    with db.session() as s:
        row = s.get(TokenRecord, "c1")
        assert row is not None
        stored = " ".join(str(v) for v in vars(row).values())
        assert "at-0" not in stored and "rt-0" not in stored
        assert row.key_id == cipher.active_kid and row.scope == "patient/*.rs"
        assert row.launch_context["patient"] == "p-1"
        conn = s.get(Connection, "c1")
        assert conn is not None and conn.granted_scopes == "patient/*.rs" and conn.patient_id == "p-1"
    assert vault.get_access_token("c1") == "at-0"
    assert token_server.state.grants == []  # still fresh: no refresh


def test_sal23_refresh_near_expiry_and_sal24_rotation_committed(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server, left=30)  # < 60 s left
    assert vault.get_access_token("c1") == "at-1"
    assert token_server.state.count("refresh_token") == 1
    assert token_server.state.grants[0]["form"]["client_id"] == "app-1"  # public client (SAL-27)
    info = vault.token_info("c1")
    assert info is not None and info.version == 2 and info.has_refresh_token
    # a second vault (another process) sees the rotated refresh token: the server accepts it
    other = make_vault(db, cipher)
    assert other.force_refresh("c1") == "at-2"
    assert token_server.state.grants[1]["form"]["refresh_token"] == "rt-1"


def _clocked_vault(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, expires_in: int
) -> tuple[TokenVault, list[datetime]]:
    """A vault on a clock the test moves (``now[0]``), holding ``at-0`` for ``expires_in`` seconds and ``rt-0``."""
    now = [datetime.now(UTC)]
    add_connection(db, fhir_base=token_server.fhir_base)
    token_server.state.valid_refresh.add("rt-0")
    vault = make_vault(db, cipher, clock=lambda: now[0])
    vault.save_token_response(
        "c1",
        parse_token_response(
            {"access_token": "at-0", "token_type": "Bearer", "expires_in": expires_in, "refresh_token": "rt-0"},
            clock=lambda: now[0],
        ),
    )
    return vault, now


def test_sal23_twenty_percent_rule(db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer) -> None:
    vault, now = _clocked_vault(db, cipher, token_server, 3600)
    now[0] += timedelta(seconds=2870)  # 730 s left > 20 % of 3600
    assert vault.get_access_token("c1") == "at-0"
    now[0] += timedelta(seconds=20)  # 710 s left < 720 s
    assert vault.get_access_token("c1") == "at-1"


def test_sal23_under_sixty_seconds_left_refreshes_even_when_more_than_twenty_percent_is_left(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """A short-lived token (200 s: 20 % is 40 s) is refreshed once less than 60 s is left, not only under 40 s."""
    vault, now = _clocked_vault(db, cipher, token_server, 200)
    now[0] += timedelta(seconds=130)  # 70 s left
    assert vault.get_access_token("c1") == "at-0"
    now[0] += timedelta(seconds=15)  # 55 s left: under 60 s, above 20 % (40 s)
    assert vault.get_access_token("c1") == "at-1"


def test_sal24_cerner_keeps_original_refresh_token(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    token_server.state.rotate = False
    vault = seeded(db, cipher, token_server)
    assert vault.force_refresh("c1") == "at-1"
    assert vault.force_refresh("c1") == "at-2"
    assert [g["form"]["refresh_token"] for g in token_server.state.grants] == ["rt-0", "rt-0"]


def test_sal25_reused_refresh_token_marks_needs_reauth(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server)
    token_server.state.valid_refresh.clear()  # the server considers rt-0 used up (rotation reuse detection)
    with pytest.raises(NeedsReauthError):
        vault.get_access_token("c1")
    assert status(db) == "needs_reauth"
    with pytest.raises(NeedsReauthError):  # no retry loop: the server is not asked again
        vault.get_access_token("c1")
    assert token_server.state.count("refresh_token") == 1
    with db.session() as s:
        outcomes = [e.outcome for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "token.refresh"))]
    assert outcomes == ["needs_reauth"]


def test_sal25_transient_failures_retried(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server)
    token_server.state.fail_next = [503, 500]
    assert vault.get_access_token("c1") == "at-1"
    assert len(token_server.state.grants) == 3


def test_sal25_persistent_outage_keeps_old_token_while_valid(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server, left=30)
    token_server.state.fail_next = [503] * 6
    assert vault.get_access_token("c1") == "at-0"  # still valid for ~30 s: keep using it
    assert status(db) == "active"
    with pytest.raises(TemporarilyUnavailableError):  # after a 401 the old token is useless
        vault.token_source("c1").refresh_after_unauthorized("at-0")
    assert status(db) == "active"
    token_server.state.fail_next = []
    assert vault.get_access_token("c1") == "at-1"  # rt-0 was kept


def test_401_refreshes_once_and_reuses_a_newer_token(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server, left=3600)
    source: TokenSource = vault.token_source("c1")
    assert source.get_token() == "at-0"
    assert source.refresh_after_unauthorized("at-0") == "at-1"
    assert source.refresh_after_unauthorized("at-0") == "at-1"  # stale rejection: someone already refreshed
    assert token_server.state.count("refresh_token") == 1


def test_no_refresh_token_needs_reauth_after_expiry(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    add_connection(db, fhir_base=token_server.fhir_base)
    vault = make_vault(db, cipher)
    vault.save_token_response("c1", token("at-0", None, 3600, left=30))
    assert vault.get_access_token("c1") == "at-0"  # cannot refresh, but still valid
    with pytest.raises(NeedsReauthError):
        vault.token_source("c1").refresh_after_unauthorized("at-0")
    assert status(db) == "needs_reauth"
    assert token_server.state.grants == []


def test_sal32_backend_connection_mints_with_fresh_assertion(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    assert vault.get_access_token("c1") == "at-1"  # 300 s token reused until near expiry
    assert vault.force_refresh("c1") == "at-2"
    forms = [g["form"] for g in token_server.state.grants]
    assert [f["grant_type"] for f in forms] == ["client_credentials", "client_credentials"]
    assert forms[0]["scope"] == "system/*.rs"
    claims = [jwt.decode(f["client_assertion"], options={"verify_signature": False}) for f in forms]
    assert claims[0]["aud"] == token_server.token_endpoint and claims[0]["jti"] != claims[1]["jti"]
    info = vault.token_info("c1")
    assert info is not None and not info.has_refresh_token


@pytest.mark.parametrize("refusal", ["invalid_grant", "invalid_scope"])
def test_sal32_backend_mint_refused_with_invalid_grant_is_client_rejected_not_needs_reauth(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, refusal: str
) -> None:
    """A backend connection has no patient and no refresh token: its client_credentials grant refused by the token
    endpoint (Epic answers ``invalid_grant`` to a bad or expired client assertion or a key it does not know) is the
    client registration's problem. The connection is ``client_rejected`` with the EHR's code audited (not
    ``needs_reauth``, which asks a patient to authorize again), the grant is not retried, later uses answer the
    state naming the code, and the admin's retry makes it active once the EHR accepts the client again."""
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    token_server.state.client_refusal = (400, {"error": refusal, "error_description": "client assertion expired"})
    with pytest.raises(ClientRejectedError, match=rf"refused the client_credentials grant \({refusal}: client asser"):
        vault.force_refresh("c1")
    assert status(db) == "client_rejected"
    assert token_server.state.count("client_credentials") == 2  # the mint, then one refused grant: not retried
    with db.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.refresh").order_by(AuditEvent.id))
        refused = [(e.outcome, e.detail.get("error_code"), e.detail.get("reason")) for e in events][-1]
    assert refused == ("client_rejected", refusal, "client_grant_refused")
    with pytest.raises(ClientRejectedError, match=rf"refused the client_credentials grant \({refusal}\)"):
        vault.get_access_token("c1")  # the state answers, no token request
    assert token_server.state.count("client_credentials") == 2
    token_server.state.client_refusal = None  # the admin fixed the registration and retries
    assert vault.reactivate("c1") not in ("", "at-1")  # a new mint
    assert status(db) == "active"


def test_a_backend_grant_refused_with_a_vendor_code_names_it_on_one_line(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """Any refusal makes a backend connection client_rejected, a vendor's own ``error`` too: that code is repeated in
    the run's error and on every later use, so one that is not RFC 6749 shaped (a line break, 2,000 characters: it
    may be an echo of the request) is replaced by ``malformed_error`` and said in words, never shown; a shaped
    vendor code is kept as sent (the test below)."""
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    token_server.state.client_refusal = (400, {"error": "client_blocked\nSEE-ADMIN " + "x" * 2000})
    with pytest.raises(ClientRejectedError) as refused:
        vault.force_refresh("c1")
    with pytest.raises(ClientRejectedError) as later:
        vault.get_access_token("c1")
    for message in (str(refused.value), str(later.value)):
        assert "\n" not in message and "x" * 64 not in message, message
        assert "(malformed_error)" in message and "SEE-ADMIN" not in message, message
    assert "an error code not in RFC 6749's form, not shown" in str(refused.value)
    with db.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.outcome == "client_rejected")).one()
    assert event.detail["error_code"] == "malformed_error"


def test_a_backend_grant_refused_with_a_shaped_vendor_code_keeps_it(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """A vendor's own code in RFC 6749's form (printable, at most 64 characters) is kept: the admin looks it up."""
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    token_server.state.client_refusal = (400, {"error": "client_blocked SEE-ADMIN 42"})
    with pytest.raises(ClientRejectedError) as refused:
        vault.force_refresh("c1")
    assert "(client_blocked SEE-ADMIN 42)" in str(refused.value)
    assert "a code RFC 6749 does not define" in str(refused.value)


def test_a_backend_grant_failing_with_an_invalid_grant_body_on_a_5xx_is_not_a_refusal(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """The EHR failing (a 503 whatever its body says) is an outage, never a refusal of the client: still active."""
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    token_server.state.client_refusal = (503, {"error": "invalid_grant"})
    with pytest.raises(EhrSyncError):
        vault.force_refresh("c1", keep_valid=False)
    assert status(db) == "active"


# A 408 or 429 from the token endpoint is the EHR (or its gateway) throttling or timing out, whatever its body says:
# before, one with an OAuth error body was raised as that error (a 429 ``invalid_grant`` sent a patient back to
# authorize, a still-valid token was not kept) and a 408 without one was an unusable answer, never retried.
_THROTTLES = {
    "429-invalid_grant": (429, {"error": "invalid_grant", "error_description": "slow down"}),
    "429-vendor-code": (429, {"error": "rate_limited"}),
    "408-no-body": (408, {}),
}


@pytest.mark.parametrize("answer", _THROTTLES.values(), ids=_THROTTLES.keys())
def test_a_throttled_refresh_keeps_the_valid_token_and_is_retried_never_needs_reauth(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, answer: tuple[int, dict[str, str]]
) -> None:
    vault = seeded(db, cipher, token_server, left=3600)
    token_server.state.answer_next = [answer] * 3  # every attempt of the vault's retries
    assert vault.force_refresh("c1") == "at-0"  # the still-valid token, as for a 503
    assert status(db) == "active" and token_server.state.count("refresh_token") == 3  # retried like a 503
    token_server.state.answer_next = [answer] * 3
    with pytest.raises(RefreshDeferredError, match="the refresh was not done"):
        vault.force_refresh("c1", keep_valid=False)  # an admin's refresh: told it was not done
    assert status(db) == "active"
    assert vault.force_refresh("c1") == "at-1"  # the EHR answers again: the refresh token still works


@pytest.mark.parametrize("answer", _THROTTLES.values(), ids=_THROTTLES.keys())
def test_a_throttled_backend_mint_keeps_the_valid_token_never_client_rejected(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, answer: tuple[int, dict[str, str]]
) -> None:
    add_backend_connection(db, cipher, token_server.fhir_base, token_endpoint=token_server.token_endpoint)
    vault = make_vault(db, cipher)
    assert vault.get_access_token("c1") == "at-1"
    token_server.state.answer_next = [answer] * 3
    assert vault.force_refresh("c1") == "at-1"
    assert status(db) == "active" and token_server.state.count("client_credentials") == 4


def test_sal34_revoke_refresh_then_access_then_delete(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server, left=3600)
    assert vault.revoke_and_delete("c1") is True
    assert token_server.state.revoked == [("refresh_token", "rt-0"), ("access_token", "at-0")]
    assert vault.token_info("c1") is None
    assert status(db) == "disconnected"
    with pytest.raises(NeedsReauthError):
        vault.get_access_token("c1")


def test_sal34_a_revocation_cut_short_deletes_and_says_which_token_was_revoked(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """The refresh token revoked, the access token's revocation answered 503: the tokens are deleted all the same
    (the person asked to disconnect), and the result and the ``token.revoke`` audit row say what was not revoked."""
    vault = seeded(db, cipher, token_server, left=3600)
    token_server.state.revoke_unavailable = {"access_token"}
    revocation = vault.disconnect("c1")
    assert (revocation.revoked, revocation.outcome, revocation.confirmed) == (False, "failed", ("refresh_token",))
    assert revocation.error_code == "temporarily_unavailable" and revocation.error is not None
    assert revocation.error.retry_after == 30.0  # the EHR's Retry-After, kept on the error
    said = revocation.describe()
    assert "only the refresh token was revoked at the EHR" in said and "(temporarily_unavailable)" in said
    assert token_server.state.revoked == [("refresh_token", "rt-0")]
    assert vault.token_info("c1") is None and status(db) == "disconnected"
    with db.session() as s:
        [event] = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke"))
        assert (event.outcome, event.detail) == (
            "local_only",
            {
                "revocation": "failed",
                "revoked_at_server": False,
                "confirmed": ["refresh_token"],
                "error_code": "temporarily_unavailable",
            },
        )


def test_audit_events_never_hold_token_values(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = seeded(db, cipher, token_server)
    vault.get_access_token("c1")
    vault.revoke_and_delete("c1")
    with db.session() as s:
        events = list(s.scalars(select(AuditEvent)))
    actions = [e.action for e in events]
    assert actions == ["token.save", "token.refresh", "token.revoke"]
    dump = repr([(e.detail, e.outcome, e.action) for e in events])
    for secret in ("at-0", "rt-0", "at-1", "rt-1"):
        assert secret not in dump


def test_unknown_connection(db: AppDatabase, cipher: TokenCipher) -> None:
    with pytest.raises(UnknownConnectionError):
        make_vault(db, cipher).get_access_token("nope")


def run_workers(db_url: str, key_b64: str, mode: str, workers: int = 3) -> list[tuple[str, str]]:
    """Spawn ``workers`` processes that ask for a token at the same moment; their (status, token) answers."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=refresh_worker, args=(db_url, key_b64, "c1", barrier, results, mode)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return outcomes


def test_sal23_one_refresh_across_processes(
    db_url: str, db: AppDatabase, cipher: TokenCipher, key_b64: str, token_server: RunningTokenServer
) -> None:
    """SAL-23/24: three spawned processes find the token near expiry at once: exactly one refresh is sent."""
    seeded(db, cipher, token_server, left=30)
    token_server.state.delay_s = 0.3  # keep the first refresh in flight while the others arrive
    assert run_workers(db_url, key_b64, "near_expiry") == [("ok", "at-1")] * 3
    assert token_server.state.count("refresh_token") == 1
    assert status(db) == "active"
    info = make_vault(db, cipher).token_info("c1")
    assert info is not None and info.version == 2


def test_sal23_one_refresh_after_401_across_processes(
    postgres_url: str, cipher: TokenCipher, key_b64: str, token_server: RunningTokenServer
) -> None:
    """After a 401 with the same token in three processes, one refreshes and the others reuse its result.

    (The SQLite variant of this runs against the sandbox in ``test_store_sandbox``.)
    """
    db = AppDatabase.from_url(postgres_url)
    db.migrate()
    seeded(db, cipher, token_server, left=3600)
    token_server.state.delay_s = 0.3
    assert run_workers(postgres_url, key_b64, "after_401") == [("ok", "at-1")] * 3
    assert token_server.state.count("refresh_token") == 1
    db.dispose()


def test_sal32_first_backend_mint_serialized_across_processes(
    db_url: str, db: AppDatabase, cipher: TokenCipher, key_b64: str, token_server: RunningTokenServer
) -> None:
    """No tokens row yet: the connection-row lock still lets exactly one process mint (no duplicate insert)."""
    add_backend_connection(db, cipher, token_server.fhir_base)  # token endpoint from discovery
    token_server.state.delay_s = 0.3
    outcomes = run_workers(db_url, key_b64, "near_expiry")
    assert outcomes == [("ok", "at-1")] * 3, outcomes
    assert token_server.state.count("client_credentials") == 1


def test_a_refresh_in_flight_does_not_block_other_writers(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """While the token server answers one connection's refresh, the app database takes other writes: on SQLite
    no write transaction is open across the grant (a file lock per connection serializes refreshers instead)."""
    vault = seeded(db, cipher, token_server)
    token_server.state.release = threading.Event()
    results: list[str] = []
    refresher = threading.Thread(target=lambda: results.append(vault.force_refresh("c1")))
    refresher.start()
    assert token_server.state.seen.wait(10), "the refresh never reached the token server"
    add_connection(db, fhir_base=token_server.fhir_base, connection_id="c2")  # a write while the grant is open
    token_server.state.release.set()
    refresher.join(30)
    assert not token_server.state.release_timed_out, "the write waited for the refresh to finish"
    assert results == ["at-1"]
    assert vault.token_source("c1").get_token() == "at-1"


@pytest.mark.parametrize(
    ("change", "server_refuses"),
    [("disconnect", False), ("disconnect", True), ("delete_tokens", False)],
)
def test_rows_changed_during_a_refresh_win_over_its_answer(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, change: str, server_refuses: bool
) -> None:
    """A disconnect (which revokes, so the grant may come back ``invalid_grant``) or deleted tokens during a
    refresh: SQLite holds no lock across the grant, so the change lands first and the answer is dropped (audited
    as ``dropped``; the caller is told to re-authorize); PostgreSQL's row lock makes the change wait for the
    refresh instead. Either way no tokens survive, and a disconnected connection stays disconnected."""
    vault = seeded(db, cipher, token_server)
    token_server.state.release = threading.Event()
    outcome: list[object] = []

    def refresh() -> None:
        try:
            outcome.append(vault.force_refresh("c1"))
        except NeedsReauthError as exc:
            outcome.append(exc)

    def make_change() -> None:
        if server_refuses:
            token_server.state.valid_refresh.discard("rt-0")  # the disconnect revoked it at the server
        with db.locked_session() as session:
            row = lock_row(session, "c1")
            conn = session.get(Connection, "c1")
            assert row is not None and conn is not None
            session.delete(row)
            if change == "disconnect":
                conn.status = ConnectionStatus.DISCONNECTED

    refresher = threading.Thread(target=refresh)
    refresher.start()
    assert token_server.state.seen.wait(10)
    changing = threading.Thread(target=make_change)
    changing.start()
    if db.dialect == "sqlite":
        changing.join(10)  # nothing holds a lock: it finishes while the grant is still open
        assert not changing.is_alive()
    token_server.state.release.set()
    refresher.join(30)
    changing.join(30)
    assert len(outcome) == 1
    if db.dialect == "sqlite":
        assert isinstance(outcome[0], NeedsReauthError)
        with db.session() as session:
            audits = session.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "token.refresh")).all()
        assert audits[-1] == "dropped"
    assert vault.token_info("c1") is None
    with db.session() as session:
        conn = session.get(Connection, "c1")
        assert conn is not None
        assert conn.status == (ConnectionStatus.DISCONNECTED if change == "disconnect" else ConnectionStatus.ACTIVE)


def test_a_failing_discovery_keeps_a_still_valid_token(db: AppDatabase, cipher: TokenCipher) -> None:
    """The token endpoint comes from discovery when not stored: a network failure there is transient like a
    failed grant, so a token that has not expired yet is kept (and the failure audited)."""
    add_connection(db, fhir_base="http://127.0.0.1:9/fhir")  # nothing listens on the discard port
    vault = make_vault(db, cipher)
    vault.save_token_response("c1", token("at-0", "rt-0", 3600, left=30))
    assert vault.token_source("c1").get_token() == "at-0"
    with db.session() as session:
        audits = session.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "token.refresh")).all()
    assert audits == ["transient_failure"]


@contextmanager
def _refresh_held_elsewhere(db: AppDatabase, connection_id: str) -> Iterator[None]:
    """Another process refreshing ``connection_id``, as far as this one can tell: SQLite's refresh lock file, or
    PostgreSQL's row locks held by a transaction of another connection."""
    if db.dialect == "sqlite":
        with _refresh_lock.sqlite_refresh_lock(db, connection_id):
            yield
        return
    with db.locked_session() as session:
        lock_row(session, connection_id)
        yield


def test_refresh_lock_held_too_long_is_a_typed_error(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh waits for another process's refresh of the same grant at most ``REFRESH_LOCK_TIMEOUT_S``, then
    ``RefreshLockTimeoutError`` names the connection: on PostgreSQL it waited on the row lock without limit."""
    vault = seeded(db, cipher, token_server)
    monkeypatch.setattr(_refresh_lock, "REFRESH_LOCK_TIMEOUT_S", 0.5)
    with _refresh_held_elsewhere(db, "c1"), pytest.raises(RefreshLockTimeoutError, match="c1"):
        vault.force_refresh("c1")
    assert token_server.state.count("refresh_token") == 0
    assert vault.force_refresh("c1") == "at-1"  # the lock released, the next refresh goes through
    if db.dialect == "postgresql":  # the bound covered the lock's wait only, not the rest of the transaction
        with db.locked_session() as session:
            lock_row(session, "c1")
            assert session.execute(text("SHOW lock_timeout")).scalar() == "0"


def test_a_token_answer_cut_off_at_the_request_deadline_is_not_asked_again(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server trickling its token answer is cut off at EHRSYNC_REQUEST_DEADLINE_S (a transient failure: the
    still-valid token is kept), and not asked three more times while the refresh lock is held.

    3 s, not 0.5: the deadline bounds the refresh's discovery request too, which a busy CI machine may answer in
    over half a second; the trickled answer (31 bytes, one per 0.3 s) still needs three times as long."""
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "3")
    vault = seeded(db, cipher, token_server, left=30)
    token_server.state.trickle_s = 0.3
    assert vault.get_access_token("c1") == "at-0"  # still valid for ~30 s: kept
    assert token_server.state.count("refresh_token") == 1
    with db.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.refresh")))
    assert [(e.outcome, e.detail.get("error_code")) for e in events] == [
        ("transient_failure", "request_deadline_exceeded")
    ]


@pytest.mark.parametrize(("provider_id", "lifetime"), [("cerner", 570), ("epic", 3600), ("generic", 7200)])
def test_sal23_vendor_documented_token_lifetime_caps_expires_in(
    db: AppDatabase, cipher: TokenCipher, provider_id: str, lifetime: int
) -> None:
    """vendors.md §3/§8 ``token_ttl_hint``: Oracle Health's tokens last 570 s whatever ``expires_in`` claims, so a
    7200 s claim is stored as 570 s and refreshed early (SAL-23 20 % rule from it); a vendor with no hint keeps it."""
    add_connection(db, fhir_base="https://ehr.example/fhir", provider_id=provider_id)
    vault = make_vault(db, cipher)
    answer = token("at-0", "rt-0", 7200)
    vault.save_token_response("c1", answer)
    with db.session() as s:
        row = s.get(TokenRecord, "c1")
        assert row is not None
        stored = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        issued = row.issued_at if row.issued_at.tzinfo else row.issued_at.replace(tzinfo=UTC)
    assert stored - issued == timedelta(seconds=lifetime)
