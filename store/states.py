"""OAuth ``state`` storage (SAL-09, SAL-13): hashed, single-use, browser-bound, 10-minute expiry.

A consumed state also keeps what its callback came to (``CallbackOutcome``, in ``extra``), so a reload of that
callback in the same browser is answered from it instead of being refused or exchanging the code again. A state no
request can use any more (expired unused, or past its replay window) goes as logins start (``purge_now_and_then``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from connectors.errors import EhrSyncError
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.models import OAuthState, utcnow

__all__ = [
    "DEFAULT_STATE_TTL",
    "PURGE_EVERY",
    "CallbackOutcome",
    "ConsumedState",
    "InvalidStateError",
    "OAuthStateStore",
    "RecordedOutcome",
    "hash_secret",
]

logger = logging.getLogger(__name__)

DEFAULT_STATE_TTL = timedelta(minutes=10)
#: How often a process deletes the states no request can use any more (``purge_now_and_then``, as logins start).
PURGE_EVERY = timedelta(minutes=5)
_VERIFIER_FIELD = "code_verifier"
#: key in ``OAuthState.extra``: the outcome of the callback that consumed the state (never returned as ``extra``)
_OUTCOME = "callback_outcome"


class InvalidStateError(EhrSyncError):
    """Unknown, reused, expired or foreign-browser ``state``: answer 400 and make no token call (SAL-13)."""

    code = "invalid_state"


def hash_secret(value: str) -> str:
    """SHA-256 hex: what is stored instead of a state or browser-session id."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ConsumedState:
    """Everything stored with a state, the PKCE verifier decrypted (keep it in memory only)."""

    tenant_id: str
    provider_id: str
    issuer: str
    code_verifier: str = field(repr=False)
    nonce: str | None
    redirect_uri: str | None
    redirect_target: str | None
    launch: str | None
    scope: str | None
    extra: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class CallbackOutcome:
    """What the callback that consumed a state came to: a status, the connection it made, or the error code and
    its message as the patient was shown it, and ``retry_until`` (ISO-8601) when that answer said when to come back
    (``Retry-After``). Never a token, a code or PHI."""

    status: Literal["pending", "connected", "failed", "abandoned"]
    connection_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    retry_until: str | None = None


@dataclass(frozen=True)
class RecordedOutcome:
    """A consumed state's outcome with what a reload needs to answer like the first callback did."""

    outcome: CallbackOutcome
    tenant_id: str
    redirect_target: str | None
    consumed_at: datetime


def _replay_hash(state: str, replay_key: str) -> str:
    """Ties an outcome to one callback URL (the state is 256 random bits: the hash reveals nothing of the key)."""
    return hash_secret(f"{state}\x00{replay_key}")


class OAuthStateStore:
    """Creates and atomically consumes authorization states in the app database."""

    def __init__(
        self,
        db: AppDatabase,
        cipher: TokenCipher,
        *,
        clock: Callable[[], datetime] = utcnow,
        ttl: timedelta = DEFAULT_STATE_TTL,
        purge_every: timedelta = PURGE_EVERY,
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._ttl = ttl
        self._purge_every = purge_every
        self._purge_lock = threading.Lock()
        self._purged_at: float | None = None

    def create(
        self,
        *,
        browser_session: str,
        tenant_id: str,
        provider_id: str,
        issuer: str,
        code_verifier: str,
        nonce: str | None = None,
        redirect_uri: str | None = None,
        redirect_target: str | None = None,
        launch: str | None = None,
        scope: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a new pending authorization and return the raw ``state`` (256 bits from the CSPRNG)."""
        if not browser_session:
            raise ValueError("browser_session must be the id from the user's session cookie")
        if _OUTCOME in (extra or {}):
            raise ValueError(f"extra key {_OUTCOME!r} is the store's own")
        state = secrets.token_urlsafe(32)
        state_hash = hash_secret(state)
        now = self._clock()
        sealed = self._cipher.encrypt(
            code_verifier, tenant_id=tenant_id, owner_id=f"state:{state_hash}", field=_VERIFIER_FIELD
        )
        with self._db.session() as session, session.begin():
            session.add(
                OAuthState(
                    state_hash=state_hash,
                    session_hash=hash_secret(browser_session),
                    code_verifier_ct=sealed,
                    key_id=self._cipher.key_id_of(sealed),
                    nonce=nonce,
                    issuer=issuer,
                    tenant_id=tenant_id,
                    provider_id=provider_id,
                    redirect_uri=redirect_uri,
                    redirect_target=redirect_target,
                    launch=launch,
                    scope=scope,
                    extra=dict(extra or {}),
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
        return state

    def consume(self, state: str, *, browser_session: str, replay_key: str = "") -> ConsumedState:
        """Mark the state used (exactly once, even under races) and return what was stored with it.

        A state presented from another browser is burnt too: a leaked state must not stay usable. Consumed by its
        own browser, it is marked ``pending`` in the same transaction, for that browser's reload of the callback
        ``replay_key`` names (``recorded_outcome``).
        """
        if not state:
            raise InvalidStateError("missing state parameter")
        state_hash = hash_secret(state)
        now = self._clock()
        with self._db.session() as session, session.begin():
            claimed = session.execute(
                update(OAuthState)
                .where(
                    OAuthState.state_hash == state_hash,
                    OAuthState.used_at.is_(None),
                    OAuthState.expires_at > now,
                )
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(claimed, "rowcount", 0) != 1:
                raise InvalidStateError("state is unknown, already used or expired")
            row = session.scalars(select(OAuthState).where(OAuthState.state_hash == state_hash)).one()
            extra = {k: v for k, v in (row.extra or {}).items() if k != _OUTCOME}
            same_browser = secrets.compare_digest(row.session_hash, hash_secret(browser_session or ""))
            if same_browser:
                pending = {"status": "pending", "replay": _replay_hash(state, replay_key)}
                row.extra = {**extra, _OUTCOME: pending}
        # committed: the state is burnt whatever happens next, including a foreign browser session
        if not same_browser:
            logger.warning("oauth state presented from a different browser session; burnt")
            raise InvalidStateError("state was issued to a different browser session")
        verifier = self._cipher.decrypt(
            row.code_verifier_ct, tenant_id=row.tenant_id, owner_id=f"state:{state_hash}", field=_VERIFIER_FIELD
        )
        return ConsumedState(
            tenant_id=row.tenant_id,
            provider_id=row.provider_id,
            issuer=row.issuer,
            code_verifier=verifier,
            nonce=row.nonce,
            redirect_uri=row.redirect_uri,
            redirect_target=row.redirect_target,
            launch=row.launch,
            scope=row.scope,
            extra=extra,
            created_at=row.created_at,
        )

    def record_outcome(self, state: str, outcome: CallbackOutcome, *, session: Session | None = None) -> None:
        """Keep what the callback that consumed ``state`` came to (a state it did not mark is left alone). The
        connection it made stays named when a later outcome names none (it stopped after storing it). With
        ``session``: in that open transaction, which its caller commits (the connection it names, stored with it)."""
        if session is None:
            with self._db.session() as own, own.begin():
                return self.record_outcome(state, outcome, session=own)
        row = session.scalars(select(OAuthState).where(OAuthState.state_hash == hash_secret(state))).first()
        current = (row.extra or {}).get(_OUTCOME) if row is not None else None
        if row is None or not isinstance(current, dict):
            return
        kept = {k: current[k] for k in ("replay", "connection_id") if current.get(k) is not None}
        fields = {k: v for k, v in asdict(outcome).items() if v is not None}
        row.extra = {**row.extra, _OUTCOME: {"replay": "", **kept, **fields}}

    def recorded_outcome(self, state: str, *, browser_session: str, replay_key: str = "") -> RecordedOutcome | None:
        """The outcome of the callback this browser sent with ``state`` and ``replay_key``, while the state's time
        to live since it was consumed lasts; ``None`` for another browser, another callback URL or no outcome."""
        if not state or not browser_session:
            return None
        with self._db.session() as session:
            row = session.scalars(
                select(OAuthState).where(OAuthState.state_hash == hash_secret(state), OAuthState.used_at.is_not(None))
            ).first()
        if row is None or row.used_at is None or row.used_at + self._ttl <= self._clock():
            return None
        kept = (row.extra or {}).get(_OUTCOME)
        if not isinstance(kept, dict) or not secrets.compare_digest(row.session_hash, hash_secret(browser_session)):
            return None
        if not secrets.compare_digest(str(kept.get("replay", "")), _replay_hash(state, replay_key)):
            return None
        outcome = CallbackOutcome(
            status=kept["status"],
            connection_id=kept.get("connection_id"),
            error_code=kept.get("error_code"),
            message=kept.get("message"),
            retry_until=kept.get("retry_until"),
        )
        return RecordedOutcome(outcome, row.tenant_id, row.redirect_target, row.used_at)

    def purge_expired(self) -> int:
        """Delete the states no request can use any more; returns how many rows went. An unused state goes once
        expired; a consumed one once its replay window is over (``ttl`` after it was consumed, as
        ``recorded_outcome`` reads it), so a reload just before that still gets the first callback's answer.
        One DELETE on the ``expires_at`` index: a state is always consumed after it was created, so its window
        ends after its expiry (under the same ``ttl``) and only expired rows are looked at."""
        now = self._clock()
        window_over = OAuthState.used_at <= now - self._ttl
        with self._db.session() as session, session.begin():
            result = session.execute(
                delete(OAuthState).where(OAuthState.expires_at <= now, OAuthState.used_at.is_(None) | window_over)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def purge_now_and_then(self) -> int | None:
        """``purge_expired`` at most once per ``purge_every`` per store (a process's), best effort: called as a
        login starts, so the table holds about the logins of the last two ``ttl`` and ``purge_every``. ``None``: not
        due, or the database failed (logged; the login goes on)."""
        started = time.monotonic()
        with self._purge_lock:
            if self._purged_at is not None and started - self._purged_at < self._purge_every.total_seconds():
                return None
            self._purged_at = started
        try:
            gone = self.purge_expired()
        except SQLAlchemyError as exc:
            logger.warning("could not delete the expired login states: %s", type(exc).__name__)
            return None
        if gone:
            logger.info("deleted %d login states past their expiry or replay window", gone)
        return gone
