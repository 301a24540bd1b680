"""The token vault: encrypted storage plus refresh serialized per connection across processes.

Refresh is serialized per connection (PostgreSQL: ``SELECT ... FOR UPDATE`` on its rows; SQLite: a file lock
per connection, so no database-wide write lock is held during the token call, see ``_refresh``); the row is
re-read inside the lock so a refresh another process already did is reused, and new tokens are committed
before anyone uses them (SAL-23, SAL-24): rotating servers (eCW) never see a refresh token twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import NoReturn, TypeVar

import httpx
from sqlalchemy.orm import Session

from connectors.errors import EhrSyncError
from connectors.smart import DiscoveryCache, TokenResponse
from connectors.tokens import TokenSource
from connectors.transport.tls import default_ssl_context
from store import _refresh
from store._grants import ClientAuthResolver, GrantContext, RetryPolicy
from store._undecryptable import mark_undecryptable, recover_if_decryptable
from store.audit import audit_connection, record_audit
from store.crypto import TokenCipher
from store.database import AppDatabase
from store.disconnect import disconnect, find_connection
from store.errors import TokenKeyMissingError, TokenUndecryptableError, UnknownConnectionError
from store.models import Connection, ConnectionKind, ConnectionStatus, TokenRecord, utcnow
from store.revocation import Revocation
from store.tokenrows import open_field, write_tokens

__all__ = ["TokenInfo", "TokenVault", "UnknownConnectionError", "VaultTokenSource", "reactivatable"]

#: Backend states an admin's retry mints from; needs_reauth: where earlier versions put one refused with invalid_grant
_BACKEND_RETRY_STATES = (
    ConnectionStatus.CLIENT_REJECTED,
    ConnectionStatus.TOKEN_UNDECRYPTABLE,
    ConnectionStatus.NEEDS_REAUTH,
)
#: Patient states an admin's retry refreshes from: the client's authentication refused (the refresh token kept). A
#: patient's needs_reauth is theirs to leave (authorize again); a token_undecryptable one recovers on its next use.
_PATIENT_RETRY_STATES = (ConnectionStatus.CLIENT_REJECTED,)


def reactivatable(kind: str, status: str) -> bool:
    """Whether an admin's retry (``TokenVault.reactivate``) applies to a connection of this kind in this state."""
    backend = kind in (ConnectionKind.BACKEND, ConnectionKind.GROUP)
    return status in (_BACKEND_RETRY_STATES if backend else _PATIENT_RETRY_STATES)


logger = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class TokenInfo:
    """Non-secret facts about a connection's stored tokens (safe to show and log)."""

    connection_id: str
    scope: str | None
    issued_at: datetime
    expires_at: datetime
    has_refresh_token: bool
    key_id: str
    version: int


class VaultTokenSource:
    """``connectors.tokens.TokenSource`` backed by the vault for one connection."""

    def __init__(self, vault: TokenVault, connection_id: str, *, wait_for_lock: bool = True) -> None:
        self._vault = vault
        self.connection_id = connection_id
        self._wait = wait_for_lock

    def get_token(self) -> str:
        return self._vault.get_access_token(self.connection_id, wait_for_lock=self._wait)

    def refresh_after_unauthorized(self, rejected: str) -> str:
        """After a 401: refresh once (unless another process already did) or raise ``NeedsReauthError``."""
        return self._vault.refresh(self.connection_id, rejected=rejected, wait_for_lock=self._wait)

    def __repr__(self) -> str:
        return f"VaultTokenSource(connection_id={self.connection_id!r})"


class TokenVault:
    """Stores, hands out and refreshes the tokens of connections."""

    def __init__(
        self,
        db: AppDatabase,
        cipher: TokenCipher,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        discovery_cache: DiscoveryCache | None = None,
        client_auth_resolver: ClientAuthResolver | None = None,
        environ: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), verify=default_ssl_context())
        self._clock = clock or utcnow
        self._grants = GrantContext(
            cipher,
            self._http,
            discovery_cache=discovery_cache or DiscoveryCache(),
            resolver=client_auth_resolver,
            environ=environ,
            retry=retry or RetryPolicy(),
            sleep=sleep,
        )

    def close(self) -> None:
        """Close the HTTP client if the vault created it (an injected one belongs to the caller)."""
        if self._owns_http:
            self._http.close()

    # -- storing -----------------------------------------------------------------------------------------
    def save_token_response(
        self, connection_id: str, response: TokenResponse, *, session: Session | None = None
    ) -> None:
        """Store a token answer (code exchange, backend mint); a missing refresh token keeps the old one. With
        ``session``: in that open transaction, which its caller commits (a new connection and its first tokens)."""
        if session is None:
            with self._db.locked_session() as locked:
                return self.save_token_response(connection_id, response, session=locked)
        row = _refresh.lock_row(session, connection_id)
        conn = self._connection(session, connection_id)
        write_tokens(session, self._cipher, conn, row, response, now=self._clock())
        detail = {"expires_in": response.expires_in, "scope": response.scope}
        audit_connection(session, conn, action="token.save", outcome="success", detail=detail)

    # -- handing out -------------------------------------------------------------------------------------
    def get_access_token(self, connection_id: str, *, wait_for_lock: bool = True) -> str:
        """A usable access token; refreshes first when < 20 % of the lifetime or < 60 s is left (SAL-23).
        ``wait_for_lock`` False: when another process is refreshing the grant, ``RefreshLockTimeoutError`` at once
        instead of waiting up to ``REFRESH_LOCK_TIMEOUT_S`` (work that may as well not happen now)."""
        token = self._decrypting(connection_id, lambda: self._current_token(connection_id))
        return token if token is not None else self.refresh(connection_id, wait_for_lock=wait_for_lock)

    def _current_token(self, connection_id: str) -> str | None:
        """The stored access token while it is fresh enough, else None (a refresh is due)."""
        with self._db.session() as session:
            conn = self._connection(session, connection_id)
            _refresh.check_status(conn)
            row = session.get(TokenRecord, connection_id)
            if row is not None and not _refresh.needs_refresh(row, self._clock()):
                return open_field(self._cipher, row, "access_token")
        return None

    def token_source(self, connection_id: str, *, wait_for_lock: bool = True) -> TokenSource:
        """What ``FhirClient``/``BulkClient`` take: refreshes near expiry and once after a 401. ``wait_for_lock``
        False: either refresh raises ``RefreshLockTimeoutError`` at once while another process refreshes the grant."""
        return VaultTokenSource(self, connection_id, wait_for_lock=wait_for_lock)

    def token_info(self, connection_id: str) -> TokenInfo | None:
        with self._db.session() as session:
            row = session.get(TokenRecord, connection_id)
            if row is None:
                return None
            return TokenInfo(
                connection_id=connection_id,
                scope=row.scope,
                issued_at=row.issued_at,
                expires_at=row.expires_at,
                has_refresh_token=row.refresh_token_ct is not None,
                key_id=row.key_id,
                version=row.version,
            )

    # -- refreshing --------------------------------------------------------------------------------------
    def refresh(
        self,
        connection_id: str,
        *,
        rejected: str | None = None,
        force: bool = False,
        keep_valid: bool = True,
        wait_for_lock: bool = True,
    ) -> str:
        """Refresh under the cross-process lock unless another process already did; see module docstring."""
        run = partial(
            _refresh.run_locked_refresh,
            self._db,
            self._cipher,
            self._grants,
            clock=self._clock,
            wait_for_lock=wait_for_lock,
        )
        return self._decrypting(
            connection_id, lambda: run(connection_id, rejected=rejected, force=force, keep_valid=keep_valid)
        )

    def _decrypting(self, connection_id: str, call: Callable[[], _T]) -> _T:
        """Run ``call``; a ``token_undecryptable`` connection whose token opens again is active again and ``call``
        runs once more; a token failing authentication marks the connection (see ``_undecryptable``)."""
        try:
            return call()
        except TokenKeyMissingError as exc:
            self._mark_undecryptable(connection_id, exc)
        except TokenUndecryptableError as exc:
            if not recover_if_decryptable(self._db, self._cipher, connection_id, self._clock()):
                self._mark_undecryptable(connection_id, exc)
        try:
            return call()
        except TokenUndecryptableError as exc:
            self._mark_undecryptable(connection_id, exc)

    def _mark_undecryptable(self, connection_id: str, exc: TokenUndecryptableError) -> NoReturn:
        """Status ``token_undecryptable`` (admin API) and an audit row, unless the key id is only missing in this
        process (logged, status unchanged); then raise ``exc``."""
        if isinstance(exc, TokenKeyMissingError):
            logger.error("connection %s: key id %s is not configured in this process", connection_id, exc.key_id)
            raise exc
        with self._db.locked_session() as session:
            mark_undecryptable(session, self._connection(session, connection_id), exc, self._clock())
        raise exc

    def confirm_unauthorized(self, connection_id: str) -> str:
        """A request still got 401 after its one refresh: the current token is rejected too. A backend token
        re-acquired moments ago because of a 401 puts the connection in ``client_rejected`` (raised)."""
        return self.refresh(connection_id, rejected=self.get_access_token(connection_id))

    def reactivate(self, connection_id: str) -> str:
        """An admin retries a connection the EHR's refusal of its client stopped (``reactivatable``), after fixing
        the registration, credentials or keys: a ``client_rejected``/``token_undecryptable`` backend connection, or
        one left ``needs_reauth``, mints a new token; a ``client_rejected`` patient connection refreshes with its
        stored refresh token. Active again only if that grant works; refused again, it is ``client_rejected`` again
        (or ``needs_reauth`` when the EHR now refuses the patient's refresh token); failing transiently, it keeps
        its state."""
        with self._db.locked_session() as session:
            conn = self._connection(session, connection_id)
            previous = conn.status
            if not reactivatable(conn.kind, previous):
                raise ValueError(f"connection {connection_id} is a {conn.kind} connection in state {previous}")
            row = _refresh.lock_row(session, connection_id)
            if row is not None and previous == ConnectionStatus.TOKEN_UNDECRYPTABLE:
                session.delete(row)  # a backend token is disposable: a new one is minted below
            conn.status = ConnectionStatus.ACTIVE
        try:
            return self.force_refresh(connection_id, keep_valid=False)  # a token kept is no proof the client works
        except EhrSyncError:
            with self._db.locked_session() as session:
                conn = self._connection(session, connection_id)
                if conn.status == ConnectionStatus.ACTIVE:
                    conn.status = previous
            raise

    def force_refresh(self, connection_id: str, *, keep_valid: bool = True) -> str:
        """Refresh (mint) now. ``keep_valid`` False (an admin asked): a refresh not made while the current token is
        still valid raises why (``RefreshDeferredError``, ``NoRefreshTokenError``) instead of answering that token."""
        return self.refresh(connection_id, force=True, keep_valid=keep_valid)

    # -- removing ----------------------------------------------------------------------------------------
    def delete_tokens(self, connection_id: str) -> bool:
        """Forget a connection's tokens locally (no server call); True when there were any."""
        with self._db.locked_session() as session:
            row = _refresh.lock_row(session, connection_id)
            if row is None:
                return False
            session.delete(row)
            record_audit(
                session, action="token.delete", outcome="success", tenant_id=row.tenant_id, connection_id=connection_id
            )
            return True

    def revoke_and_delete(self, connection_id: str) -> bool:
        """``disconnect``; whether the server confirmed both revocations."""
        return self.disconnect(connection_id).revoked

    def disconnect(self, connection_id: str) -> Revocation:
        """SAL-34: revoke the refresh then the access token when the server offers revocation, then delete.

        Local deletion happens whatever the server says (the user asked to disconnect); the answer (and the
        ``token.revoke`` audit row, ``local_only`` unless revoked) says what was revoked and why not the rest.
        Requests spend the caller's active call budget (``vendor_call_budget``): a busy one sends nothing. Tokens
        stored while those were revoked (a re-authorization) are revoked too (``store.disconnect``).
        """
        return disconnect(self._db, self._grants, self._cipher, self._clock, connection_id)

    @staticmethod
    def _connection(session: Session, connection_id: str) -> Connection:
        return find_connection(session, connection_id)
