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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import (
    EhrSyncError,
    InvalidClientError,
    InvalidGrantError,
    NeedsReauthError,
    OAuthError,
    QuotaExhaustedError,
    StepBudgetExceededError,
    TransportError,
    UnauthorizedClientError,
    UnusableTokenAnswerError,
    is_refusal,
)
from connectors.smart import TokenResponse, client_credentials_grant, refresh_grant
from store._grants import TRANSIENT, GrantContext, with_retry
from store._refresh_apply import RefreshOutcome, apply_outcome, lock_row, unusable_answer_outcome
from store._refresh_lock import RefreshLockTimeoutError, sqlite_refresh_lock
from store._refused import (
    answer_lost,
    client_auth_refused_outcome,
    client_grant_refused,
    client_refused_outcome,
    credential_check,
    last_answer_lost,
    refused_outcome,
)
from store._same_client import ClientRefusal, pause_same_client
from store._states import check_status, fresh_after_401
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.errors import ClientRejectedError, NoRefreshTokenError, RefreshDeferredError
from store.models import Connection, ConnectionKind, ConnectionStatus, TokenRecord
from store.rate_windows import CallBudgetBusyError
from store.tokenrows import open_field

#: Nothing was sent (a busy shared call budget, the EHR's own quota spent until a far reset), the EHR failed
#: transiently (``_grants.TRANSIENT``), or the wait before asking again is past the sync step's budget
#: (``_grants.with_retry``): a still-valid token is kept, the refresh tried again on its next use; else it is raised.
_TRANSIENT = (*TRANSIENT, CallBudgetBusyError, QuotaExhaustedError, StepBudgetExceededError)

__all__ = ["RefreshLockTimeoutError", "check_status", "lock_row", "needs_refresh", "run_locked_refresh"]

logger = logging.getLogger(__name__)

MIN_REMAINING = timedelta(seconds=60)
REFRESH_FRACTION = 0.2


def needs_refresh(row: TokenRecord, now: datetime) -> bool:
    """SAL-23: refresh when less than 20 % of the lifetime or less than 60 s is left (never above half)."""
    lifetime = max(row.expires_at - row.issued_at, timedelta(0))
    threshold = min(max(lifetime * REFRESH_FRACTION, MIN_REMAINING), lifetime / 2)
    return row.expires_at - now <= threshold


@dataclass(frozen=True)
class _Grant:
    """Everything the HTTP call needs, gathered while the rows were read."""

    call: Callable[[], TokenResponse]
    name: str
    current: str | None
    valid_until: datetime | None  # the current token's expiry while it is still valid and not rejected
    basis: int | None
    after_unauthorized: bool = False
    lost_before: bool = False  # the last refresh of these tokens lost its answer (see ``_refused``)
    auth_method: str = "none"  # how the client authenticates (what to check when that is refused)
    endpoint: str = ""  # the token endpoint asked (connections sharing it and the client share a refusal)


def run_locked_refresh(
    db: AppDatabase,
    cipher: TokenCipher,
    grants: GrantContext,
    connection_id: str,
    *,
    rejected: str | None,
    force: bool,
    clock: Callable[[], datetime],
    keep_valid: bool = True,
    wait_for_lock: bool = True,
) -> str:
    """Refresh (or mint, for backend connections) unless another process already did; errors are raised after
    the status and audit changes are committed. ``keep_valid`` False: a refresh that was not made although the
    current token is still valid (transient failure, no refresh token) raises why instead of answering that token.
    ``wait_for_lock`` False: another process refreshing the grant raises ``RefreshLockTimeoutError`` at once."""
    if db.dialect == "sqlite":
        with sqlite_refresh_lock(db, connection_id, timeout_s=None if wait_for_lock else 0):
            with db.session() as session:
                step = _prepare(session, cipher, grants, connection_id, rejected, force, clock)
            outcome = step if isinstance(step, RefreshOutcome) else _grant(step, grants, connection_id)
            if outcome.writes:
                with db.locked_session() as session:
                    outcome = apply_outcome(session, cipher, connection_id, outcome, clock)
            if outcome.refusal is not None:  # right after: SQLite cannot lock the siblings' rows in this one
                pause_same_client(db, connection_id, outcome.refusal, clock())
    else:
        with db.locked_session() as session:
            lock_row(session, connection_id, wait=wait_for_lock)
            step = _prepare(session, cipher, grants, connection_id, rejected, force, clock)
            outcome = step if isinstance(step, RefreshOutcome) else _grant(step, grants, connection_id)
            outcome = apply_outcome(session, cipher, connection_id, outcome, clock)
            if outcome.refusal is not None:  # in the same transaction
                pause_same_client(db, connection_id, outcome.refusal, clock(), session)
    if outcome.error is not None:
        raise outcome.error
    if outcome.kept is not None and not keep_valid:
        raise outcome.kept
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
) -> RefreshOutcome | _Grant:
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
            return RefreshOutcome(token=current)
        if rejected is None and not needs_refresh(row, now):
            return RefreshOutcome(token=current)
    backend = conn.kind in (ConnectionKind.BACKEND, ConnectionKind.GROUP)
    name = "client_credentials" if backend else "refresh_token"
    valid_until = row.expires_at if row is not None and rejected is None and row.expires_at > now else None
    basis = row.version if row is not None else None
    if backend and row is not None and rejected is not None and rejected == current and fresh_after_401(row, now):
        return _client_rejected(conn.id, basis)
    if not backend and (row is None or row.refresh_token_ct is None):
        if valid_until is not None and current is not None:
            logger.info("connection %s: no refresh token; using the current token until it expires", conn.id)
            return RefreshOutcome(token=current, kept=NoRefreshTokenError(conn.id, valid_until))
        return RefreshOutcome(
            error=NeedsReauthError(f"connection {conn.id} has no refresh token: re-authorization required"),
            needs_reauth=True,
            audit=("needs_reauth", {"grant": name, "reason": "no_refresh_token"}),
            basis=basis,
        )
    try:  # discovery of the token endpoint can fail like the grant itself: same fallback
        endpoint = grants.token_endpoint(conn)
        auth = grants.client_auth(session, conn)
        scope = grants.backend_scope(session, conn) if backend else None
    except _TRANSIENT as exc:
        return _transient(exc, name, current, valid_until, basis, connection_id)
    call: Callable[[], TokenResponse]
    if scope is not None:
        call = partial(client_credentials_grant, endpoint, http=grants.http, client_auth=auth, scope=scope, clock=clock)
    else:
        assert row is not None
        refresh_token = open_field(cipher, row, "refresh_token")
        call = partial(
            refresh_grant, endpoint, http=grants.http, client_auth=auth, refresh_token=refresh_token, clock=clock
        )
    lost = not backend and last_answer_lost(session, connection_id, basis)
    after_unauthorized = backend and rejected is not None
    return _Grant(call, name, current, valid_until, basis, after_unauthorized, lost, auth.method, endpoint)


def _client_rejected(connection_id: str, basis: int | None) -> RefreshOutcome:
    """A 401 on a token re-acquired because of a 401: a third mint would be refused too (issue 10)."""
    return RefreshOutcome(
        error=ClientRejectedError(
            f"connection {connection_id}: the EHR refused a freshly re-acquired client_credentials token (401); "
            "check the client registration (client id, key/JWKS, scopes)"
        ),
        new_status=ConnectionStatus.CLIENT_REJECTED,
        audit=("client_rejected", {"grant": "client_credentials", "error_code": "client_rejected"}),
        basis=basis,
    )


def _transient(
    exc: EhrSyncError,
    name: str,
    current: str | None,
    valid_until: datetime | None,
    basis: int | None,
    connection_id: str,
    *,
    lost: bool = False,
) -> RefreshOutcome:
    """A network failure, ``temporarily_unavailable`` or a busy call budget (``call_budget_busy``, nothing sent):
    keep a still-valid token (the early refresh is tried again on its next use), else report the error. ``lost``:
    the grant's answer was lost, audited with the tokens' version so the next refresh can say so if refused."""
    detail: dict[str, object] = {"grant": name, "error_code": exc.code}
    if lost:
        detail.update(answer_lost=True, version=basis)
    audit = ("transient_failure", detail)
    if valid_until is not None and current is not None:
        logger.warning(
            "connection %s: refresh failed transiently (%s); keeping the current token", connection_id, exc.code
        )
        kept = RefreshDeferredError(connection_id, exc, valid_until)
        return RefreshOutcome(token=current, audit=audit, basis=basis, kept=kept)
    return RefreshOutcome(error=exc, audit=audit, basis=basis)


def _grant(grant: _Grant, grants: GrantContext, connection_id: str) -> RefreshOutcome:
    """Make the grant (retrying transient failures) and classify its answer; no database access here. A refused
    refresh token, or a client not allowed the refresh grant at all, is final (``_refused``): never retried, the
    patient must authorize again; so is a backend connection's client_credentials grant refused by the token
    endpoint (any refusal, ``invalid_grant`` included: client_rejected, an admin's to fix, never a patient's), and
    a refresh whose client authentication is refused (``invalid_client``: client_rejected, the refresh token kept).
    A call budget with no free call (``CallBudgetBusyError``) or the EHR's quota spent until a reset too far to wait
    for (``QuotaExhaustedError``), nothing sent, is transient like a timeout."""
    detail: dict[str, object] = {"grant": grant.name}
    lost: list[bool] = []  # per failed attempt: was its answer lost (the request may have been used)?

    def attempt() -> TokenResponse:
        try:
            return grant.call()
        except TransportError as exc:
            lost.append(answer_lost(exc))
            raise

    try:
        response = with_retry(attempt, grants.retry, grants.sleep, f"{grant.name} for connection {connection_id}")
    except _TRANSIENT as exc:
        used = any(lost)  # an attempt of this call may have spent the refresh token, whichever failed last
        return _transient(exc, grant.name, grant.current, grant.valid_until, grant.basis, connection_id, lost=used)
    except UnusableTokenAnswerError as exc:  # a 200 answer: the grant happened, keep the refresh token it rotated to
        return unusable_answer_outcome(exc, grant.name, grant.basis, detail)
    except OAuthError as exc:
        return _refused(exc, grant, connection_id, detail, lost=any(lost))
    if grant.after_unauthorized:
        detail["after_unauthorized"] = True
    return RefreshOutcome(
        token=response.access_token,
        response=response,
        audit=("success", detail),
        basis=grant.basis,
        after_unauthorized=grant.after_unauthorized,
    )


def _refused(
    exc: OAuthError, grant: _Grant, connection_id: str, detail: dict[str, object], *, lost: bool
) -> RefreshOutcome:
    """What a token endpoint's OAuth error answer comes to (see ``_grant``). ``invalid_client`` refuses the app's
    credentials, shared by its other connections: the outcome names the refusal so they are paused too
    (``_same_client``)."""
    if grant.name == "client_credentials":  # a backend connection: no patient, no refresh token
        if not client_grant_refused(exc):
            return RefreshOutcome(error=exc, audit=_failure(exc, detail), basis=grant.basis)
        outcome = client_refused_outcome(exc, connection_id, grant.basis, detail)  # invalid_grant included
    elif isinstance(exc, (InvalidGrantError, UnauthorizedClientError)):  # the refresh token or grant refused
        return refused_outcome(exc, connection_id, grant.basis, detail, lost=grant.lost_before or lost)
    elif isinstance(exc, InvalidClientError) and is_refusal(exc):  # the app's credentials refused, not the grant
        outcome = client_auth_refused_outcome(exc, connection_id, grant.basis, detail, grant.auth_method)
    else:
        return RefreshOutcome(error=exc, audit=_failure(exc, detail), basis=grant.basis)
    if not isinstance(exc, InvalidClientError):  # this grant's scope, assertion or permission: not the credentials
        return outcome
    check = credential_check(grant.auth_method)
    refusal = ClientRefusal(grant.endpoint, grant.name, grant.auth_method, exc.error, check)
    return replace(outcome, refusal=refusal)


def _failure(exc: OAuthError, detail: dict[str, object]) -> tuple[str, dict[str, object]]:
    return ("failure", {**detail, "error_code": exc.error, "status_code": exc.status})
