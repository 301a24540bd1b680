"""One request path for every call to an EHR: token placement, rate limit, retries, 401 refresh, typed errors.

FhirClient and BulkClient both go through :class:`FhirSession`, so SAL-40 (token only to its own FHIR base),
BDX-10/BDX-32 (Retry-After, backoff) and the 401-refresh-once rule are implemented exactly once.
"""

from __future__ import annotations

import enum
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from connectors.budgets import (
    check_step_budget,
    forget_unreachable,
    mark_unreachable,
    rate_budget,
    unreachable_reason,
)
from connectors.errors import EhrUnreachableError, SecurityPolicyError, TransportError
from connectors.fhir._answers import (
    CONTROL_CHARS,
    error_from_response,
    operation_outcome_of,
    retry_kind,
    unauthorized,
)
from connectors.fhir._bounds import BodyBounds
from connectors.http import (
    RateLimiter,
    RetryPolicy,
    is_within_base,
    redact_url,
    resolve_url,
    same_origin,
)
from connectors.tokens import TokenSource

__all__ = ["DEFAULT_TIMEOUT", "FhirSession", "QueryParams", "TokenRule", "operation_outcome_of"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
QueryParams = Mapping[str, str] | Sequence[tuple[str, str]]
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: A refused connection or failed DNS lookup is tried this many times (quickly), then the EHR is unreachable.
UNREACHABLE_ATTEMPTS = 2
UNREACHABLE_RETRY_S = 0.5


def refused_or_unresolved(exc: httpx.TransportError) -> bool:
    """Whether the connection was refused or the host name did not resolve (not a timeout, not TLS)."""
    if not isinstance(exc, httpx.ConnectError):
        return False
    cause: BaseException | None = exc
    for _ in range(8):  # httpx → httpcore → the OSError; bounded in case a chain loops
        if cause is None:
            break
        if isinstance(cause, (ConnectionRefusedError, socket.gaierror)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class TokenRule(enum.Enum):
    """Where a request may carry the bearer token (SAL-40)."""

    REQUIRE_BASE = "require-base"  # must be under the FHIR base; otherwise refuse the request
    REQUIRE_ORIGIN = "require-origin"  # same scheme/host/port as the base (bulk status and file URLs)
    IF_WITHIN_BASE = "if-within-base"  # send only when under the base; elsewhere go without a token
    NEVER = "never"


def _origin_of(url: str) -> str:
    parts = httpx.URL(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}"


class FhirSession:
    """Sends requests for one FHIR base with its TokenSource; owns the httpx.Client only if it created it."""

    def __init__(
        self,
        base: str,
        tokens: TokenSource | None,
        *,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimiter | None = None,
        rate_limit_key: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        self.base = base
        self.on_response = on_response
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.rate_limit = rate_limit
        self.rate_limit_key = rate_limit_key or base
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False)
        self._timeout = timeout

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def _token_for(self, url: str, rule: TokenRule) -> bool:
        """Whether this URL gets the token; raises SecurityPolicyError when the rule demands one elsewhere."""
        if rule is TokenRule.NEVER or self.tokens is None:
            return False
        if rule is TokenRule.IF_WITHIN_BASE:
            return is_within_base(url, self.base)
        allowed = is_within_base(url, self.base) if rule is TokenRule.REQUIRE_BASE else same_origin(url, self.base)
        if not allowed:
            raise SecurityPolicyError(f"refusing to send the access token to {redact_url(url)}: not the FHIR base")
        return True

    def request(
        self,
        method: str,
        url: str,
        *,
        handler: Callable[[httpx.Response], T],
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        token_rule: TokenRule = TokenRule.REQUIRE_BASE,
        idempotent: bool = True,
        passthrough: Callable[[httpx.Response], bool] | None = None,
        max_redirects: int = 0,
        url_guard: Callable[[str], None] | None = None,
        bounds: BodyBounds | None = None,
    ) -> T:
        """Send with retries (see :meth:`_request`); token calls made meanwhile spend from the same rate budget."""
        with rate_budget(self.rate_limit, self.rate_limit_key):
            return self._request(
                method,
                url,
                handler=handler,
                params=params,
                headers=headers,
                content=content,
                token_rule=token_rule,
                idempotent=idempotent,
                passthrough=passthrough,
                max_redirects=max_redirects,
                url_guard=url_guard,
                bounds=bounds,
            )

    def _unreachable(
        self, url: str, attempt: int, exc: httpx.TransportError, known: str | None
    ) -> EhrUnreachableError | None:
        """An EhrUnreachableError once a refused connection / failed DNS lookup was tried enough, else None.

        Only those two mark the origin unreachable: a connect timeout or a TLS failure may be a slow or briefly
        overloaded host, so it goes back to the normal retries with backoff. ``known`` is the remembered reason
        of an origin marked earlier: its one attempt failing the same way fails at once, without retrying."""
        if not refused_or_unresolved(exc):
            return None
        origin = _origin_of(url)
        if known is not None:
            return EhrUnreachableError(
                f"cannot reach the EHR at {origin} ({known}; remembered from an earlier request)"
            )
        reason = CONTROL_CHARS.sub(" ", str(exc))[:120] or type(exc).__name__
        if attempt + 1 < UNREACHABLE_ATTEMPTS:
            return None
        mark_unreachable(origin, reason)
        return EhrUnreachableError(f"cannot reach the EHR at {origin} ({reason}): check its URL and that it is up")

    def _attempt_timeout(self, bounds: BodyBounds | None, started: float) -> httpx.Timeout | float | None:
        """The session's timeouts, each cut to what is left of the request deadline or step budget."""
        ends_at = bounds.ends_at(started) if bounds is not None else None
        if bounds is None or ends_at is None:
            return self._timeout
        left = max(ends_at - bounds.clock(), 0.01)
        base = httpx.Timeout(self._timeout) if self._timeout is not None else self.http.timeout
        parts = {name: getattr(base, name) for name in ("connect", "read", "write", "pool")}
        return httpx.Timeout(**{name: left if value is None else min(value, left) for name, value in parts.items()})

    def _request(
        self,
        method: str,
        url: str,
        *,
        handler: Callable[[httpx.Response], T],
        params: QueryParams | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        token_rule: TokenRule,
        idempotent: bool,
        passthrough: Callable[[httpx.Response], bool] | None,
        max_redirects: int,
        url_guard: Callable[[str], None] | None,
        bounds: BodyBounds | None,
    ) -> T:
        """Send with retries; 2xx (and ``passthrough`` matches) go to ``handler`` while the body still streams.

        A ``handler`` that fails while reading the body (dropped connection, bad gzip) restarts the request
        when ``idempotent``. Everything else becomes a typed FhirError carrying the OperationOutcome.
        ``max_redirects`` > 0 follows GET redirects (signed file URLs); the token is dropped as soon as a
        redirect leaves the FHIR base (SAL-40). ``url_guard`` vets the URL and every redirect target before
        anything is sent there (it raises to refuse, e.g. internal addresses named by a resource). ``bounds``
        caps the body's bytes and the time of each attempt (BodyBounds); a host that refused a connection in
        the last minute fails at once with EhrUnreachableError.
        """
        if url_guard is not None:
            url_guard(url)
        use_token = self._token_for(url, token_rule)
        token: str | None = None
        refreshed = False
        attempt = 0
        policy = self.retry
        query: httpx.QueryParams | None = None
        if params is not None:
            query = httpx.QueryParams(list(params.items()) if isinstance(params, Mapping) else list(params))
        while True:
            check_step_budget()
            known = unreachable_reason(_origin_of(url))  # remembered: one attempt, no retries, fails fast
            send_headers = dict(headers or {})
            if use_token and self.tokens is not None:
                token = token or self.tokens.get_token()
                send_headers["Authorization"] = f"Bearer {token}"
            if self.rate_limit is not None:
                self.rate_limit.acquire(self.rate_limit_key)
            started = bounds.clock() if bounds is not None else 0.0
            timeout = self._attempt_timeout(bounds, started)
            extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
            request = self.http.build_request(method, url, params=query, headers=send_headers, content=content, **extra)
            try:
                response = self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                unreachable = self._unreachable(url, attempt, exc, known)
                if unreachable is not None:
                    raise unreachable from exc
                if refused_or_unresolved(exc):  # not sent: one quick retry before calling the EHR unreachable
                    policy.sleep(UNREACHABLE_RETRY_S)
                    attempt += 1
                    continue
                not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))  # safe to retry even a POST
                if not (idempotent or not_sent) or attempt + 1 >= policy.max_attempts:
                    raise TransportError(
                        f"{method} {redact_url(url)} failed after {attempt + 1} attempt(s): {type(exc).__name__}"
                    ) from exc
                delay = policy.backoff_delay(attempt)
                logger.warning("transport error, retrying", extra={"url": redact_url(url), "delay_s": delay})
                policy.sleep(delay)
                attempt += 1
                continue
            forget_unreachable(_origin_of(url))  # it answered: whatever refused before is up again
            try:
                if bounds is not None:
                    bounds.wrap(response, method, started)
                if self.on_response is not None:
                    self.on_response(response)  # e.g. athenahealth quota headers, read after every call
                status = response.status_code
                if status == 401 and token is not None and self.tokens is not None:
                    if refreshed:
                        response.read()
                        raise unauthorized(method, url, response)
                    logger.info("401 from server, refreshing the token once", extra={"url": redact_url(url)})
                    token = self.tokens.refresh_after_unauthorized(token)
                    refreshed = True
                    continue
                location = response.headers.get("Location")
                if status in _REDIRECTS and location and max_redirects > 0 and method == "GET":
                    max_redirects -= 1
                    url = resolve_url(location, str(request.url))
                    query = None
                    if url_guard is not None:
                        response.close()
                        url_guard(url)
                    stays = same_origin if token_rule is TokenRule.REQUIRE_ORIGIN else is_within_base
                    use_token = use_token and stays(url, self.base)
                    logger.info("following redirect", extra={"url": redact_url(url), "status": status})
                    continue
                if 200 <= status < 300 or (passthrough is not None and passthrough(response)):
                    try:
                        return handler(response)
                    except (httpx.TransportError, httpx.DecodingError) as exc:
                        if not idempotent or attempt + 1 >= policy.max_attempts:
                            raise TransportError(
                                f"{method} {redact_url(url)} body failed after {attempt + 1} attempt(s): "
                                f"{type(exc).__name__}"
                            ) from exc
                        policy.sleep(policy.backoff_delay(attempt))
                        attempt += 1
                        continue
                response.read()
                kind = retry_kind(response, idempotent)
                if kind is not None and attempt + 1 < policy.max_attempts:
                    header = response.headers.get("Retry-After") if kind == "throttle" else None
                    delay = policy.delay_for(attempt, header) if kind == "throttle" else policy.backoff_delay(attempt)
                    logger.info(
                        "retryable answer, waiting",
                        extra={"url": redact_url(url), "status": status, "delay_s": round(delay, 3)},
                    )
                    policy.sleep(delay)
                    attempt += 1
                    continue
                raise error_from_response(method, url, response)
            finally:
                response.close()
