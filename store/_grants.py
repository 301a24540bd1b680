"""What the vault needs to talk to a connection's token server: endpoints, client auth, retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx
from sqlalchemy.orm import Session

from connectors.budgets import check_step_wait
from connectors.errors import (
    ConfigurationError,
    RequestDeadlineError,
    StepBudgetExceededError,
    TemporarilyUnavailableError,
    TransportError,
)
from connectors.http import RetryPolicy as EhrRetryPolicy
from connectors.providers import check_provider_client_auth
from connectors.smart import ClientAuth, DiscoveryCache, SmartConfiguration, discover
from store.crypto import TokenCipher
from store.models import Connection, ConnectionKind
from store.provider_configs import client_auth_from_config, load_provider_config

__all__ = ["ClientAuthResolver", "GrantContext", "GrantRetryPolicy", "RetryPolicy", "grant_of", "with_retry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
ClientAuthResolver = Callable[[Session, Connection], ClientAuth]
TRANSIENT = (TransportError, TemporarilyUnavailableError)


def grant_of(conn: Connection) -> str:
    """The OAuth grant a connection's client authenticates for: backend and group connections mint tokens with
    ``client_credentials``; a patient connection's refreshes belong to its ``authorization_code`` grant."""
    backend = conn.kind in (ConnectionKind.BACKEND, ConnectionKind.GROUP)
    return "client_credentials" if backend else "authorization_code"


class GrantRetryPolicy(EhrRetryPolicy):
    """The connectors' RetryPolicy configured for whole grants: bounded exponential backoff with full jitter
    for 5xx/network failures (SAL-25, §8), 3 attempts from 0.5 s up to 8 s by default."""

    def __init__(self, attempts: int = 3, base_delay_s: float = 0.5, max_delay_s: float = 8.0) -> None:
        super().__init__(
            max_attempts=attempts, backoff_start_s=base_delay_s, backoff_cap_s=max_delay_s, full_jitter=True
        )


RetryPolicy = GrantRetryPolicy  # the store's public name for it


def with_retry(call: Callable[[], T], policy: EhrRetryPolicy, sleep: Callable[[float], None], what: str) -> T:
    """Run ``call``; retry transient failures with backoff; re-raise the last one when attempts run out. A request
    cut off at its deadline (``EHRSYNC_REQUEST_DEADLINE_S``) is not retried here, as nowhere else: three more would
    hold the refresh lock past its waiters' timeout. A 429 or 503 that said when to come back (``retry_after``:
    its Retry-After, seconds or an HTTP-date) is asked again no sooner; one saying longer than the longest backoff
    is raised at once (the caller defers, its refresh token kept), not asked again into the same refusal. A wait is
    spent from the sync step the call runs in (``EHRSYNC_STEP_BUDGET_S``): one its budget cannot cover raises the
    step's ``StepBudgetExceededError`` unslept, as a request's own retry waits do (``check_step_wait``)."""
    for attempt in range(policy.max_attempts):
        try:
            return call()
        except RequestDeadlineError:  # a server trickling its answer: asking again would hold the lock as long
            raise
        except TRANSIENT as exc:
            asked = exc.retry_after
            if attempt + 1 >= policy.max_attempts or (asked is not None and asked > policy.backoff_cap_s):
                raise
            pause = policy.backoff_delay(attempt) if asked is None else max(asked, policy.backoff_delay(attempt))
            try:
                check_step_wait(pause, what, asked=asked is not None)
            except StepBudgetExceededError as over:
                raise over from exc
            logger.warning("%s failed transiently (%s); retry %d in %.2fs", what, exc.code, attempt + 1, pause)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class GrantContext:
    """Resolves the token endpoint, revocation endpoint and client auth of a connection."""

    def __init__(
        self,
        cipher: TokenCipher,
        http: httpx.Client,
        *,
        discovery_cache: DiscoveryCache,
        resolver: ClientAuthResolver | None = None,
        environ: Mapping[str, str] | None = None,
        retry: EhrRetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cipher = cipher
        self.http = http
        self.cache = discovery_cache
        self.resolver = resolver
        self.environ = environ
        self.retry = retry
        self.sleep = sleep

    def configuration(self, conn: Connection) -> SmartConfiguration:
        return with_retry(
            lambda: discover(conn.fhir_base, http=self.http, cache=self.cache), self.retry, self.sleep, "discovery"
        )

    def token_endpoint(self, conn: Connection) -> str:
        return conn.token_endpoint or self.configuration(conn).token_endpoint

    def client_auth(self, session: Session, conn: Connection) -> ClientAuth:
        """The connection's client auth, refused (AuthMethodNotAllowedError) when its vendor's plugin does not
        declare that method and alg for the connection's grant (vendors.md §8: eCW RS384 only, Epic backend JWT)."""
        if self.resolver is not None:
            auth = self.resolver(session, conn)
        else:
            config = load_provider_config(session, self.cipher, conn.tenant_id, conn.provider_id)
            auth = client_auth_from_config(config, client_id=conn.client_id, environ=self.environ)
        check_provider_client_auth(conn.provider_id, auth, grant_of(conn))
        return auth

    def backend_scope(self, session: Session, conn: Connection) -> str:
        if conn.granted_scopes:
            return conn.granted_scopes
        config = load_provider_config(session, self.cipher, conn.tenant_id, conn.provider_id)
        scope = config.get("scope") or config.get("scopes")
        if isinstance(scope, list):
            scope = " ".join(str(s) for s in scope)
        if not scope:
            raise ConfigurationError(
                f"backend connection {conn.id} has no granted_scopes and its provider config no 'scope'"
            )
        return str(scope)
