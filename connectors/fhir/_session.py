"""One request path for every call to an EHR's FHIR API: the protocol part (what to send, where a token may
go, redirects, which answer is which typed error), over the transport layers of :mod:`connectors.transport`.

FhirClient and BulkClient both go through :class:`FhirSession`. The bearer token and the 401-refresh-once
rule are an ``httpx.Auth`` flow (:class:`~connectors.transport.BearerAuth`); Retry-After, backoff, the
vendor rate budget, deadlines and unreachable hosts (BDX-10/BDX-32) are transports every attempt goes
through. SAL-40 (token only to its own FHIR base) is decided here, per URL and per redirect.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import httpx

from connectors.errors import EhrSyncError, SecurityPolicyError, TransportError
from connectors.fhir._answers import error_from_response, operation_outcome_of, unauthorized
from connectors.http import (
    CallBudget,
    RetryPolicy,
    is_within_base,
    rate_budget,
    redact_url,
    same_origin,
)
from connectors.tokens import TokenSource
from connectors.transport import DEFAULT_TIMEOUT, BearerAuth, BodyBounds, RequestPlan, ehr_client
from connectors.transport.decoding import ACCEPT_ENCODING, error_answer
from connectors.transport.plan import app_key
from connectors.transport.redirects import redirect_target

__all__ = ["DEFAULT_TIMEOUT", "FhirSession", "QueryParams", "SessionOptions", "TokenRule", "operation_outcome_of"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
QueryParams = Mapping[str, str] | Sequence[tuple[str, str]]


class TokenRule(enum.Enum):
    """Where a request may carry the bearer token (SAL-40)."""

    REQUIRE_BASE = "require-base"  # must be under the FHIR base; otherwise refuse the request
    REQUIRE_ORIGIN = "require-origin"  # same scheme/host/port as the base (bulk status and file URLs)
    IF_WITHIN_BASE = "if-within-base"  # send only when under the base; elsewhere go without a token
    NEVER = "never"


class SessionOptions(TypedDict, total=False):
    """What FhirClient and BulkClient pass on to their FhirSession as is: the rate budget's key (default: the
    base), the timeouts of a client the session creates, a callback seeing every answer (quota headers), and the
    OAuth client id the requests are made for (the EHR's quota holds are kept per app; None: not known)."""

    rate_limit_key: str | None
    client_id: str | None
    timeout: httpx.Timeout | float | None
    on_response: Callable[[httpx.Response], None] | None


@dataclass
class _Call:
    """One logical request as it moves through redirects: the token is dropped once it leaves the base."""

    method: str
    url: str
    query: httpx.QueryParams | None
    headers: Mapping[str, str] | None
    content: bytes | None
    auth: BearerAuth | None
    plan: RequestPlan
    redirects_left: int
    url_guard: Callable[[str], None] | None


class FhirSession:
    """Sends requests for one FHIR base with its TokenSource; owns the httpx.Client only if it created it."""

    def __init__(
        self,
        base: str,
        tokens: TokenSource | None,
        *,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: CallBudget | None = None,
        rate_limit_key: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.base = base
        self.client_id = app_key(client_id)
        self.on_response = on_response
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.rate_limit = rate_limit
        self.rate_limit_key = rate_limit_key or base
        self._owns_http = http is None
        self.http = http or ehr_client(timeout=timeout or DEFAULT_TIMEOUT)
        self._layers = ehr_client(self.http)  # the caller's client builds requests; the layers send them
        self._timeout = timeout

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def check_token_destination(self, url: str, rule: TokenRule) -> None:
        """Raise SecurityPolicyError now if ``rule`` would refuse to send the token to ``url`` later (SAL-40)."""
        self._token_for(url, rule)

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
        """Send; 2xx (and ``passthrough`` matches) go to ``handler`` while the body still streams.

        Retries happen below (:class:`~connectors.transport.RetryTransport`); a ``handler`` that fails while
        reading the body (dropped connection, bad gzip) restarts the request here when ``idempotent``.
        Everything else becomes a typed FhirError carrying the OperationOutcome, its body read only up to the error
        answers' bound (``decoding.error_answer``, 1 MiB): a 3xx not followed too, which a download's body limits
        (none on the answer, the caller caps what it writes) would otherwise let grow in memory as long as it lasts.
        ``max_redirects`` > 0 follows GET redirects (signed file URLs); the token is dropped as soon as a redirect
        leaves the FHIR base (SAL-40). ``url_guard`` vets the URL and every redirect target before anything is sent
        there (it raises to refuse, e.g. internal addresses named by a resource). ``bounds`` caps the body's bytes
        and the time of each attempt. Token calls made meanwhile spend from the same rate budget.
        """
        if url_guard is not None:
            url_guard(url)
        timeout = httpx.Timeout(self._timeout) if self._timeout is not None else self.http.timeout
        call = _Call(
            method,
            url,
            _query(params),
            headers,
            content,
            BearerAuth(self.tokens) if self.tokens is not None and self._token_for(url, token_rule) else None,
            RequestPlan(self.retry, idempotent, bounds, passthrough, self.on_response, timeout, app=self.client_id),
            max_redirects,
            url_guard,
        )
        with rate_budget(self.rate_limit, self.rate_limit_key):
            try:
                return self._exchange(call, handler, passthrough, token_rule)
            except EhrSyncError as exc:  # the last try's error: an earlier try may have been processed (the plan)
                exc.after_lost_answer = exc.after_lost_answer or call.plan.unanswered
                raise

    def _exchange(
        self,
        call: _Call,
        handler: Callable[[httpx.Response], T],
        passthrough: Callable[[httpx.Response], bool] | None,
        token_rule: TokenRule,
    ) -> T:
        """``request``'s tries: the handler's answer, or the typed error of the last try."""
        while True:
            response = self._send(call, token_rule)
            try:
                if response.status_code == 401 and call.auth is not None:  # its one refresh did not help
                    response.read()
                    raise unauthorized(call.method, call.url, response)
                if response.is_success or (passthrough is not None and passthrough(response)):
                    try:
                        return handler(response)
                    except (httpx.TransportError, httpx.DecodingError) as exc:
                        self._body_failed(call, exc)
                        continue
                answer = error_answer(response) if response.status_code < 400 else response  # 4xx/5xx: read, cut
                withheld = self.tokens is not None and call.auth is None
                raise error_from_response(call.method, call.url, answer, token_withheld=withheld)
            finally:
                response.close()

    def _send(self, call: _Call, token_rule: TokenRule) -> httpx.Response:
        """Send ``call`` through the layers, following GET redirects it allows (re-vetting each target)."""
        extra: dict[str, Any] = {"timeout": self._timeout} if self._timeout is not None else {}
        while True:
            request = self.http.build_request(
                call.method,
                call.url,
                params=call.query,
                headers={"Accept-Encoding": ACCEPT_ENCODING, **(call.headers or {})},
                content=call.content,
                extensions=call.plan.extensions(),
                **extra,
            )
            response = self._layers.send(request, auth=call.auth, stream=True)
            location = response.headers.get("Location")
            status = response.status_code
            if not (status in _REDIRECTS and location and call.redirects_left > 0 and call.method == "GET"):
                return response
            response.close()
            call.redirects_left -= 1
            call.url = redirect_target(location, request, status)
            call.query = None
            if call.url_guard is not None:
                call.url_guard(call.url)
            stays = same_origin if token_rule is TokenRule.REQUIRE_ORIGIN else is_within_base
            if call.auth is not None and not stays(call.url, self.base):
                call.auth = None
            logger.info("following redirect", extra={"url": redact_url(call.url), "status": status})

    def _body_failed(self, call: _Call, exc: httpx.TransportError | httpx.DecodingError) -> None:
        """Wait before restarting a request whose body broke off, or raise TransportError when that is unsafe
        (not idempotent) or the attempts are spent. A body whose wait timed out when a transfer's deadline had
        passed (its reads are cut to it) fails with TransferDeadlineError, as does a wait that would end past it."""
        plan, url = call.plan, redact_url(call.url)
        if plan.bounds is not None and isinstance(exc, httpx.TimeoutException):
            plan.bounds.check_transfer(call.method, url)
        if not plan.idempotent or not plan.can_retry():
            raise TransportError(
                f"{call.method} {url} body failed after {plan.attempt + 1} attempt(s): {type(exc).__name__}"
            ) from exc
        plan.unanswered = True  # an answer began: the request was processed, whatever its restart answers
        plan.wait(plan.policy.backoff_delay(plan.attempt), call.method, url)


def _query(params: QueryParams | None) -> httpx.QueryParams | None:
    if params is None:
        return None
    return httpx.QueryParams(list(params.items()) if isinstance(params, Mapping) else list(params))
