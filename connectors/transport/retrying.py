"""The retrying transport every EHR call goes through: per attempt it checks the step budget, and it retries
what is worth retrying (BDX-10, BDX-32); each attempt is bounded below it (:mod:`.attempt`).

Transport errors back off (a POST only when it was never sent); 429/503 wait per Retry-After (seconds or an
HTTP-date), unless the answer itself says the wait is longer than the policy's longest (``retry_after_max_s``): a
usable Retry-After, or a 429's quota headers saying no call is left until a later reset. Such an answer is handed
back at once (the caller's ``RateLimitedError``, its ``retry_after`` the server's): waiting the clamp out would only
send a request the server said it will refuse. Transient answers (408, 5xx, OperationOutcome
``transient``/``throttled``) back off when the request is idempotent. A refused connection or failed DNS lookup is
tried twice, then the origin is remembered as unreachable (:mod:`connectors.budgets`) and the rest of the run fails
fast.
Requests without a :class:`~connectors.transport.plan.RequestPlan` (token grants, discovery) pass through:
their callers retry whole grants (the token vault) and must not repeat a POST that may have been used.
"""

from __future__ import annotations

import logging
import socket

import httpx

from connectors.budgets import check_step_budget, forget_unreachable, mark_unreachable, unreachable_reason
from connectors.errors import EhrUnreachableError, RequestDeadlineError, TransportError
from connectors.http.retry import RetryPolicy
from connectors.http.urls import redact_url
from connectors.transport.answers import CONTROL_CHARS, quota_reset_s, retry_kind
from connectors.transport.plan import PlannedTransport, RequestPlan

__all__ = ["UNREACHABLE_ATTEMPTS", "UNREACHABLE_RETRY_S", "RetryTransport", "origin_of", "refused_or_unresolved"]

logger = logging.getLogger(__name__)

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


def origin_of(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def unreachable_error(
    url: httpx.URL, attempt: int, exc: httpx.TransportError, known: str | None
) -> EhrUnreachableError | None:
    """An EhrUnreachableError once a refused connection / failed DNS lookup was tried enough, else None.

    Only those two mark the origin unreachable: a connect timeout or a TLS failure may be a slow or briefly
    overloaded host, so it goes back to the normal retries with backoff. ``known`` is the remembered reason
    of an origin marked earlier: its one attempt failing the same way fails at once, without retrying."""
    if not refused_or_unresolved(exc):
        return None
    origin = origin_of(url)
    if known is not None:
        return EhrUnreachableError(f"cannot reach the EHR at {origin} ({known}; remembered from an earlier request)")
    reason = CONTROL_CHARS.sub(" ", str(exc))[:120] or type(exc).__name__
    if attempt + 1 < UNREACHABLE_ATTEMPTS:
        return None
    mark_unreachable(origin, reason)
    return EhrUnreachableError(f"cannot reach the EHR at {origin} ({reason}): check its URL and that it is up")


class RetryTransport(PlannedTransport):
    """Wraps the transport below (rate budget, then the network) with the attempts of a :class:`RequestPlan`."""

    def handle_planned(self, request: httpx.Request, plan: RequestPlan) -> httpx.Response:
        while True:
            check_step_budget()
            plan.begin(request)  # no attempt starts past a transfer's deadline (a Bulk file's), each is counted
            known = unreachable_reason(origin_of(request.url))  # remembered: one attempt, no retries, fails fast
            try:
                response = self._inner.handle_request(request)
            except httpx.TransportError as exc:
                self._after_failure(request, plan, exc, known)
                continue
            forget_unreachable(origin_of(request.url))  # it answered: whatever refused before is up again
            if self._settled(response, plan):
                return response

    def _after_failure(
        self, request: httpx.Request, plan: RequestPlan, exc: httpx.TransportError, known: str | None
    ) -> None:
        """Wait before the next attempt, or raise: EhrUnreachableError, or TransportError when out of attempts."""
        unreachable = unreachable_error(request.url, plan.attempt, exc, known)
        if unreachable is not None:
            raise unreachable from exc
        url = redact_url(str(request.url))
        if refused_or_unresolved(exc):  # not sent: one quick retry before calling the EHR unreachable
            plan.wait(UNREACHABLE_RETRY_S, request.method, url)
            return
        not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))  # safe to retry even a POST
        plan.unanswered = plan.unanswered or not not_sent  # sent, its answer lost: however a retry ends, it may count
        if not (plan.idempotent or not_sent) or not plan.can_retry():
            raise _out_of_attempts(request, plan, exc, url) from exc
        delay = plan.policy.backoff_delay(plan.attempt)
        logger.warning("transport error, retrying", extra={"url": url, "delay_s": delay})
        plan.wait(delay, request.method, url)

    def _settled(self, response: httpx.Response, plan: RequestPlan) -> bool:
        """Whether ``response`` is the answer; False after waiting out a retryable one (its body was read)."""
        request = response.request
        try:
            status = response.status_code
            if status < 400 or status == 401 or (plan.passthrough is not None and plan.passthrough(response)):
                return True  # success, redirect or a refused token: for the auth flow and the caller
            response.read()
            kind = retry_kind(response, plan.idempotent)
        except BaseException:
            response.close()
            raise
        if kind is None or not plan.can_retry():
            return True
        if not (status == 429 or (status == 503 and "Retry-After" in response.headers)):  # not "nothing was done"
            plan.unanswered = True  # a 5xx retried (a gateway may have given up on a server that did the work)
        policy = plan.policy
        url = redact_url(str(request.url))
        asked_s = policy.asked_seconds(response.headers.get("Retry-After")) if kind == "throttle" else None
        said = _said_wait(response, asked_s, policy) if kind == "throttle" else None
        if said is not None and said > policy.retry_after_max_s:
            logger.info(
                "throttled for longer than ehrsync waits, not retried",
                extra={"url": url, "status": status, "retry_after_s": round(said, 1)},
            )
            return True
        asked = None if asked_s is None else min(max(asked_s, policy.retry_after_min_s), policy.retry_after_max_s)
        delay = policy.backoff_delay(plan.attempt) if asked is None else asked
        logger.info("retryable answer, waiting", extra={"url": url, "status": status, "delay_s": round(delay, 3)})
        response.close()
        plan.wait(delay, request.method, url, asked=asked is not None)  # or past a transfer's deadline: fails now
        return False


def _said_wait(response: httpx.Response, asked: float | None, policy: RetryPolicy) -> float | None:
    """How long a throttle answer itself says the request would be refused: its usable Retry-After (``asked``), or
    a 429's spent quota's reset, the longer (None: it says neither)."""
    reset = quota_reset_s(response, policy.wall_clock().timestamp())
    return asked if reset is None else reset if asked is None else max(asked, reset)


def _out_of_attempts(request: httpx.Request, plan: RequestPlan, exc: httpx.TransportError, url: str) -> TransportError:
    """The error of a request's last failed attempt. A timeout that came from the wait being cut to the request
    deadline names the deadline (as SMART calls do), not httpx's ``ReadTimeout`` (whose own 30 s never ran
    out); cut to a spent step budget instead, the step budget's error (saying what the step keeps); to a transfer's
    deadline, TransferDeadlineError."""
    bounds = plan.bounds
    if isinstance(exc, httpx.TimeoutException) and bounds is not None and bounds.attempt_overran(request):
        check_step_budget()
        bounds.check_transfer(request.method, url)
        if bounds.deadline_s is not None:
            return RequestDeadlineError(
                f"{request.method} {url} got no complete answer within {bounds.deadline_s:g} s "
                f"(EHRSYNC_REQUEST_DEADLINE_S) on {plan.attempt + 1} attempt(s)"
            )
    return TransportError(f"{request.method} {url} failed after {plan.attempt + 1} attempt(s): {type(exc).__name__}")
