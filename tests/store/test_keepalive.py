"""Keeping idle grants alive against the sandbox EHR (issue 4).

SAL-19 (``offline_access`` grants live until revoked or unused too long), SAL-23 (refresh under the lock),
SAL-24 (a rotated refresh token is committed), SAL-25 (``invalid_grant`` → needs_reauth; transient → kept),
vendors.md §3 (Oracle Health keeps the original refresh token) and §4 (eCW rotates).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import NeedsReauthError
from connectors.providers import RefreshPolicy, get_provider
from connectors.smart import (
    PublicClientAuth,
    TokenResponse,
    discover,
    new_pkce,
    revoke_token,
)
from sandbox import SandboxServer
from store import AppDatabase, KeepaliveReport, RetryPolicy, TokenCipher, TokenVault, refresh_idle_grants
from store.errors import ClientRejectedError
from store.models import AuditEvent, Connection, ConnectionStatus, TokenRecord
from store.tokenrows import open_field
from tests.store.conftest import add_connection
from tests.store.launch import REDIRECT, authorize_code, exchange, register_public_client

WEEK = timedelta(days=7)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[AppDatabase]:
    database = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}")
    database.migrate()
    yield database
    database.dispose()


def make_vault(db: AppDatabase, cipher: TokenCipher, http: httpx.Client) -> TokenVault:
    return TokenVault(db, cipher, http, retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02))


def connect(
    db: AppDatabase,
    vault: TokenVault,
    sandbox: SandboxServer,
    http: httpx.Client,
    *,
    provider_id: str = "generic",
    idle_days: float = 0,
) -> tuple[str, TokenResponse]:
    """A standalone launch of a fresh public client (headless consent), stored through the vault; then, when
    ``idle_days`` is given, the tokens are back-dated as if last issued that long ago."""
    client_id = f"keepalive-{uuid.uuid4().hex[:8]}"
    register_public_client(sandbox, client_id)
    cfg = discover(sandbox.fhir_base, http=http)
    pkce, state = new_pkce(), secrets.token_urlsafe(16)
    code = authorize_code(http, sandbox, cfg, client_id=client_id, state=state, code_challenge=pkce.challenge)
    tokens = exchange(http, cfg, client_id, code, pkce.verifier)
    assert tokens.refresh_token
    connection_id = add_connection(
        db,
        fhir_base=sandbox.fhir_base,
        token_endpoint=cfg.token_endpoint,
        connection_id=uuid.uuid4().hex,
        client_id=client_id,
        provider_id=provider_id,
    )
    vault.save_token_response(connection_id, tokens)
    if idle_days:
        backdate(db, connection_id, timedelta(days=idle_days))
    return connection_id, tokens


@dataclass(frozen=True)
class Grants:
    """Patient grants of one app database at the sandbox, made and kept alive through one vault."""

    db: AppDatabase
    vault: TokenVault
    sandbox: SandboxServer
    http: httpx.Client

    @classmethod
    def open(cls, db: AppDatabase, cipher: TokenCipher, sandbox: SandboxServer, http: httpx.Client) -> Grants:
        return cls(db, make_vault(db, cipher, http), sandbox, http)

    def connect(self, *, provider_id: str = "generic", idle_days: float = 0) -> tuple[str, TokenResponse]:
        return connect(self.db, self.vault, self.sandbox, self.http, provider_id=provider_id, idle_days=idle_days)

    def refresh_idle(self, *, idle_for: timedelta, **options: Any) -> KeepaliveReport:
        return refresh_idle_grants(self.db, self.vault, idle_for=idle_for, **options)


def backdate(db: AppDatabase, connection_id: str, age: timedelta) -> None:
    with db.session() as s, s.begin():
        row = s.get(TokenRecord, connection_id)
        assert row is not None
        lifetime = row.expires_at - row.issued_at
        row.issued_at = datetime.now(UTC) - age
        row.expires_at = row.issued_at + lifetime


def tokens_row(db: AppDatabase, connection_id: str) -> TokenRecord:
    with db.session() as s:
        row = s.get(TokenRecord, connection_id)
        assert row is not None
        s.expunge(row)
        return row


def status(db: AppDatabase, connection_id: str) -> str:
    with db.session() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        return conn.status


def test_sal24_idle_grant_refreshed_with_rotation_fresh_grant_left_alone(
    sandbox: SandboxServer,
    sqlite_db: AppDatabase,
    cipher: TokenCipher,
    http: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """eCW-style rotation: the idle grant gets a new refresh token and issued_at moves; a fresh one is untouched."""
    caplog.set_level(logging.DEBUG)
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    idle, idle_tokens = grants.connect(provider_id="ecw", idle_days=10)
    fresh, fresh_tokens = grants.connect(provider_id="ecw")
    before_idle, before_fresh = tokens_row(sqlite_db, idle), tokens_row(sqlite_db, fresh)
    started = datetime.now(UTC)

    report = grants.refresh_idle(idle_for=WEEK)

    assert report == KeepaliveReport(refreshed=(idle,))
    after = tokens_row(sqlite_db, idle)
    assert after.version == before_idle.version + 1
    assert after.issued_at >= started - timedelta(seconds=1)
    new_refresh = open_field(cipher, after, "refresh_token")
    assert new_refresh != idle_tokens.refresh_token  # SAL-24: the rotated one was committed
    assert open_field(cipher, after, "access_token") != idle_tokens.access_token
    untouched = tokens_row(sqlite_db, fresh)
    assert (untouched.version, untouched.issued_at) == (before_fresh.version, before_fresh.issued_at)
    assert status(sqlite_db, idle) == status(sqlite_db, fresh) == ConnectionStatus.ACTIVE
    # the stored (rotated) refresh token works: a second pass a week later refreshes again
    later = datetime.now(UTC) + 2 * WEEK
    assert set(grants.refresh_idle(idle_for=WEEK, now=later).refreshed) == {fresh, idle}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (idle_tokens.refresh_token, idle_tokens.access_token, new_refresh, fresh_tokens.refresh_token):
        assert secret and secret not in logged


def test_sal25_revoked_grant_needs_reauth_while_the_others_refresh(
    sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """SQLite and PostgreSQL: the oldest grant was revoked at the EHR; it ends needs_reauth, the rest refresh."""
    grants = Grants.open(db, cipher, sandbox, http)
    revoked, revoked_tokens = grants.connect(idle_days=30)
    first, _ = grants.connect(idle_days=20)
    second, _ = grants.connect(idle_days=8)
    assert revoked_tokens.refresh_token
    revocation = discover(sandbox.fhir_base, http=http).revocation_endpoint
    assert revocation is not None
    with db.session() as s:
        row = s.get(Connection, revoked)
        assert row is not None
        client_id = row.client_id
    revoke_token(
        revocation,
        http=http,
        client_auth=PublicClientAuth(client_id),
        token=revoked_tokens.refresh_token,
        token_type_hint="refresh_token",
    )

    report = grants.refresh_idle(idle_for=WEEK)

    assert report.needs_reauth == (revoked,)
    assert report.refreshed == (first, second)
    assert report.failed == report.skipped == ()
    assert status(db, revoked) == ConnectionStatus.NEEDS_REAUTH
    assert status(db, first) == status(db, second) == ConnectionStatus.ACTIVE
    # needs_reauth grants are no longer candidates: the next run does not hammer the EHR with them
    assert grants.refresh_idle(idle_for=WEEK, now=datetime.now(UTC)) == KeepaliveReport()


def test_backend_and_inactive_connections_are_never_touched(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """Backend/group connections mint with client_credentials: no grant to keep alive, even if a server
    (against the spec) handed them a refresh token. Disabled connections are left to a person."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    patient, _ = grants.connect(idle_days=9)
    disabled, _ = grants.connect(idle_days=9)
    with sqlite_db.session() as s, s.begin():
        row = s.get(Connection, disabled)
        assert row is not None
        row.status = ConnectionStatus.DISABLED
    machine = {}
    for kind in ("backend", "group"):
        cid = add_connection(sqlite_db, fhir_base=sandbox.fhir_base, kind=kind, connection_id=f"{kind}-1")
        issued = datetime.now(UTC) - timedelta(days=40)
        response = TokenResponse(
            access_token=f"{kind}-access",
            token_type="Bearer",
            expires_in=300,
            scope="system/*.rs",
            refresh_token=f"{kind}-refresh",
            issued_at=issued,
            expires_at=issued + timedelta(minutes=5),
        )
        grants.vault.save_token_response(cid, response)
        machine[cid] = tokens_row(sqlite_db, cid).version

    report = grants.refresh_idle(idle_for=WEEK)

    assert report == KeepaliveReport(refreshed=(patient,))
    for cid, version in machine.items():
        assert tokens_row(sqlite_db, cid).version == version
    assert status(sqlite_db, disabled) == ConnectionStatus.DISABLED


def test_oracle_health_keeps_the_original_refresh_token(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """vendors.md §3: offline grants lapse after 3 months unused and refreshes return no new refresh token;
    the keepalive uses the grant (issued_at moves) and keeps the original refresh token."""
    sandbox.admin.settings(refresh_mode="none")
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, tokens = grants.connect(provider_id="cerner", idle_days=60)
    before = tokens_row(sqlite_db, cid)

    report = grants.refresh_idle(idle_for=timedelta(days=30))

    assert report.refreshed == (cid,)
    after = tokens_row(sqlite_db, cid)
    assert after.issued_at > before.issued_at + timedelta(days=59)
    assert open_field(cipher, after, "refresh_token") == tokens.refresh_token


def test_provider_without_refresh_tokens_is_skipped(
    sandbox: SandboxServer,
    sqlite_db: AppDatabase,
    cipher: TokenCipher,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RefreshPolicy.NONE means the server cannot refresh: the keepalive does not try (no provider ships it
    today, so the generic plugin is made to say so)."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, _ = grants.connect(idle_days=10)
    unknown, _ = grants.connect(provider_id="no-such-ehr", idle_days=9)
    version = tokens_row(sqlite_db, cid).version
    monkeypatch.setattr(type(get_provider("generic")), "refresh_policy", RefreshPolicy.NONE)

    report = grants.refresh_idle(idle_for=WEEK)

    assert report == KeepaliveReport(skipped=(cid, unknown))
    assert tokens_row(sqlite_db, cid).version == version


def test_sal25_transient_failure_reported_and_grant_kept_then_retried(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """A token endpoint answering 500 after the vault's retries: ``failed``, still active, same refresh token;
    the next run (outage over) refreshes it. A grant whose (long-lived) access token is still valid gets that
    token back from the vault instead of an error: it is ``failed`` too, not counted as refreshed."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, tokens = grants.connect(idle_days=10)
    long_lived, _ = grants.connect()
    with sqlite_db.session() as s, s.begin():
        row = s.get(TokenRecord, long_lived)
        assert row is not None
        row.issued_at = datetime.now(UTC) - timedelta(days=11)
        row.expires_at = datetime.now(UTC) + timedelta(days=1)
    sandbox.admin.set_fault("500", path="/oauth/token", times=4)  # two attempts per connection

    report = grants.refresh_idle(idle_for=WEEK)

    assert report == KeepaliveReport(failed=(long_lived, cid))
    assert status(sqlite_db, cid) == status(sqlite_db, long_lived) == ConnectionStatus.ACTIVE
    assert open_field(cipher, tokens_row(sqlite_db, cid), "refresh_token") == tokens.refresh_token
    assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(refreshed=(long_lived, cid))


def test_limit_takes_the_oldest_grants_first(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    young, _ = grants.connect(idle_days=8)
    oldest, _ = grants.connect(idle_days=80)
    middle, _ = grants.connect(idle_days=40)

    assert grants.refresh_idle(idle_for=WEEK, limit=2).refreshed == (oldest, middle)
    assert grants.refresh_idle(idle_for=WEEK, limit=2).refreshed == (young,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_for": timedelta(0)}, "idle_for must be a positive duration"),
        ({"idle_for": timedelta(days=-1)}, "idle_for must be a positive duration"),
        ({"idle_for": WEEK, "limit": 0}, "limit must be at least 1"),
        ({"idle_for": WEEK, "now": datetime(2026, 1, 1)}, "now must be a timezone-aware"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    sqlite_db: AppDatabase, cipher: TokenCipher, kwargs: dict[str, object], message: str
) -> None:
    vault = TokenVault(sqlite_db, cipher)
    try:
        with pytest.raises(ValueError, match=message):
            refresh_idle_grants(sqlite_db, vault, **kwargs)  # type: ignore[arg-type]
    finally:
        vault.close()


def test_worker_without_the_key_reports_failed_and_leaves_the_grant_active(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """issue 10: a keepalive worker deployed without the key the grant is sealed under (rotation without
    INTEGRATIONS_TOKEN_ENC_KEYS_OLD) reports it ``failed`` (not ``needs_reauth``) and leaves it active; a worker
    with the key refreshes it at the sandbox afterwards."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, tokens = grants.connect(idle_days=10)
    misconfigured = make_vault(sqlite_db, TokenCipher(secrets.token_bytes(32)), http)

    assert refresh_idle_grants(sqlite_db, misconfigured, idle_for=WEEK) == KeepaliveReport(failed=(cid,))
    assert status(sqlite_db, cid) == ConnectionStatus.ACTIVE
    assert open_field(cipher, tokens_row(sqlite_db, cid), "refresh_token") == tokens.refresh_token
    assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(refreshed=(cid,))


class TokenPosts:
    """Counts the token requests a client sends (an httpx request hook)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: httpx.Request) -> None:
        self.count += request.method == "POST" and request.url.path == "/oauth/token"


def refresh_audits(db: AppDatabase, connection_id: str) -> list[tuple[str, dict[str, Any]]]:
    with db.session() as s:
        stmt = select(AuditEvent).where(AuditEvent.connection_id == connection_id, AuditEvent.action == "token.refresh")
        return [(e.outcome, dict(e.detail)) for e in s.scalars(stmt.order_by(AuditEvent.id))]


def test_sal25_refresh_grant_not_allowed_needs_reauth_without_retry(
    sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher
) -> None:
    """RFC 6749 §5.2, SQLite and PostgreSQL: ``unauthorized_client`` to a refresh is the client registration
    refusing the refresh_token grant. One request (the vault retries transient failures, not this), the
    connection needs re-authorization with a reason naming the registration, and no later run asks again."""
    posts = TokenPosts()
    with httpx.Client(timeout=30.0, event_hooks={"request": [posts]}) as http:
        grants = Grants.open(db, cipher, sandbox, http)
        cid, _ = grants.connect(idle_days=10)
        sandbox.admin.set_fault("oauth_error", path="/oauth/token", error="unauthorized_client", times=None)
        posts.count = 0

        with pytest.raises(NeedsReauthError) as refused:
            grants.vault.force_refresh(cid)
        assert posts.count == 1
        assert "unauthorized_client" in str(refused.value)
        assert "client registration does not allow the refresh_token grant" in str(refused.value)
        assert status(db, cid) == ConnectionStatus.NEEDS_REAUTH
        [(outcome, detail)] = refresh_audits(db, cid)
        assert outcome == "needs_reauth" and detail["reason"] == "refresh_grant_not_allowed"
        assert detail["error_code"] == "unauthorized_client"

        assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport()
        with pytest.raises(NeedsReauthError):
            grants.vault.get_access_token(cid)
        assert posts.count == 1


def test_sal25_keepalive_refresh_grant_not_allowed_is_needs_reauth_not_failed(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher
) -> None:
    """The keepalive reports such a grant ``needs_reauth`` (not ``failed``, which it would retry every run)."""
    posts = TokenPosts()
    with httpx.Client(timeout=30.0, event_hooks={"request": [posts]}) as http:
        grants = Grants.open(sqlite_db, cipher, sandbox, http)
        cid, _ = grants.connect(idle_days=10)
        sandbox.admin.set_fault("oauth_error", path="/oauth/token", error="unauthorized_client", times=None)
        posts.count = 0
        assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(needs_reauth=(cid,))
        assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport()
        assert posts.count == 1


def test_sal25_refresh_refused_after_a_lost_answer_says_so(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """A rotating server used the refresh token but its answer was lost (the connection dropped after the work):
    the retry with the same token gets ``invalid_grant``, and the reason says the previous answer was lost."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, _ = grants.connect(idle_days=10)
    sandbox.admin.set_fault("drop_response", path="/oauth/token", times=1)

    with pytest.raises(NeedsReauthError, match="previous refresh attempt's answer was lost"):
        grants.vault.force_refresh(cid)

    assert status(sqlite_db, cid) == ConnectionStatus.NEEDS_REAUTH
    [(outcome, detail)] = refresh_audits(sqlite_db, cid)
    assert outcome == "needs_reauth" and detail["error_code"] == "invalid_grant" and detail["after_lost_answer"]


def test_sal25_refresh_refused_after_the_last_call_lost_its_answer_says_so(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """Every attempt of one keepalive lost its answer (the first used the token): that run fails, still active;
    the next run's refresh is refused and its reason names the lost answer. A refusal with no lost answer
    before it (a revoked grant) does not."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, _ = grants.connect(idle_days=10)
    sandbox.admin.set_fault("drop_response", path="/oauth/token", times=2)  # both attempts of the vault
    assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(failed=(cid,))
    assert status(sqlite_db, cid) == ConnectionStatus.ACTIVE

    with pytest.raises(NeedsReauthError, match="previous refresh attempt's answer was lost"):
        grants.vault.force_refresh(cid)
    assert [outcome for outcome, _ in refresh_audits(sqlite_db, cid)] == ["transient_failure", "needs_reauth"]

    other, _ = grants.connect(idle_days=10)
    sandbox.admin.set_fault("oauth_error", path="/oauth/token", error="invalid_grant")
    with pytest.raises(NeedsReauthError) as refused:
        grants.vault.force_refresh(other)
    assert "lost" not in str(refused.value) and "after_lost_answer" not in refresh_audits(sqlite_db, other)[0][1]


def test_sal25_a_lost_answer_before_another_failure_is_remembered_too(
    sandbox: SandboxServer, sqlite_db: AppDatabase, cipher: TokenCipher, http: httpx.Client
) -> None:
    """The first attempt used the refresh token and lost its answer, the retry got a 503: the call fails with the
    503, yet the next refusal still names the lost answer (any attempt may have spent the token, not only the last)."""
    grants = Grants.open(sqlite_db, cipher, sandbox, http)
    cid, _ = grants.connect(idle_days=10)
    sandbox.admin.set_fault("drop_response", path="/oauth/token", times=1)
    sandbox.admin.set_fault("503", path="/oauth/token", times=1, retry_after="")
    assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(failed=(cid,))
    [(outcome, detail)] = refresh_audits(sqlite_db, cid)
    assert outcome == "transient_failure" and detail["error_code"] == "temporarily_unavailable"
    assert detail["answer_lost"] is True

    with pytest.raises(NeedsReauthError, match="previous refresh attempt's answer was lost"):
        grants.vault.force_refresh(cid)


def test_keepalive_refresh_refused_invalid_client_is_client_rejected_not_needs_reauth(
    sandbox: SandboxServer, db: AppDatabase, cipher: TokenCipher
) -> None:
    """SQLite and PostgreSQL: the app's registration changed at the EHR (it became a confidential client whose secret
    this service does not hold), so the keepalive's refresh is refused ``invalid_client``. The grant is reported
    ``client_rejected``: not ``needs_reauth`` (re-authorizing would fail the same way; the patient cannot fix it) and
    not ``failed`` (asked again every run with the same credentials). Its refresh token is kept and no later run or
    use asks again."""
    posts = TokenPosts()
    with httpx.Client(timeout=30.0, event_hooks={"request": [posts]}) as http:
        grants = Grants.open(db, cipher, sandbox, http)
        cid, tokens = grants.connect(idle_days=10)
        with db.session() as s:
            conn = s.get(Connection, cid)
            assert conn is not None
            client_id = conn.client_id
        sandbox.admin.register_client(
            client_id, "confidential-symmetric", client_secret=secrets.token_urlsafe(16), redirect_uris=[REDIRECT]
        )
        posts.count = 0

        assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport(client_rejected=(cid,))
        assert posts.count == 1
        assert status(db, cid) == ConnectionStatus.CLIENT_REJECTED
        assert open_field(cipher, tokens_row(db, cid), "refresh_token") == tokens.refresh_token
        [(outcome, detail)] = refresh_audits(db, cid)
        assert (outcome, detail["reason"], detail["error_code"]) == (
            "client_rejected",
            "client_auth_refused",
            "invalid_client",
        )
        assert detail["auth_method"] == "none" and "registered and enabled" in detail["check"]

        assert grants.refresh_idle(idle_for=WEEK) == KeepaliveReport()
        with pytest.raises(ClientRejectedError):
            grants.vault.get_access_token(cid)
        assert posts.count == 1
