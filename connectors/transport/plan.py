"""What the EHR transport needs to know about one request, carried in ``request.extensions`` (as httpx
carries its own per-request ``timeout``): the retry policy, whether a repeat is safe, the body bounds, which
answers the caller takes as they are, the OAuth client the request is made for, and the attempt counter shared with
the caller's own body retries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.budgets import check_step_wait
from connectors.http.retry import RetryPolicy
from connectors.http.urls import redact_url
from connectors.transport.bounds import BodyBounds

__all__ = ["APP_EXTENSION", "PLAN_EXTENSION", "PlannedTransport", "RequestPlan", "app_key", "app_of", "plan_of"]

PLAN_EXTENSION = "ehrsync.plan"
#: The OAuth client id a plan-less request (a token grant) is made for: the EHR's quota holds are kept per app.
APP_EXTENSION = "ehrsync.app"


@dataclass
class RequestPlan:
    """One request's retry and bounds settings; ``attempt`` counts retries (0 = the first try) across every
    layer, so transport retries and the caller's restarts of a failed body share ``policy.max_attempts``."""

    policy: RetryPolicy
    idempotent: bool = True
    bounds: BodyBounds | None = None
    passthrough: Callable[[httpx.Response], bool] | None = None
    on_response: Callable[[httpx.Response], None] | None = None
    timeout: httpx.Timeout | None = None
    attempt: int = 0
    #: the last ``attempt`` counted on the bounds' transfer deadline (a redirect followed is the same attempt)
    counted: int = -1
    #: the OAuth client id the request is made for ("": not known): the EHR's quota holds are kept per app
    app: str = ""
    #: an attempt may have been processed and its answer was lost (``EhrSyncError.after_lost_answer``)
    unanswered: bool = False

    def extensions(self) -> dict[str, Any]:
        return {PLAN_EXTENSION: self}

    def can_retry(self) -> bool:
        return self.attempt + 1 < self.policy.max_attempts

    def begin(self, request: httpx.Request) -> None:
        """Before an attempt is sent: none starts past a transfer's deadline (a Bulk file's, TransferDeadlineError),
        and one that starts is counted on it."""
        transfer = None if self.bounds is None else self.bounds.transfer
        if transfer is not None:
            transfer.check(request.method, str(request.url))
            if self.counted < self.attempt:
                self.counted, transfer.attempts = self.attempt, transfer.attempts + 1

    def wait(self, seconds: float, method: str, url: str, *, asked: bool = False) -> None:
        """Sleep before the next attempt of ``method url`` and count it; a wait that would end past a transfer's
        deadline raises TransferDeadlineError instead, and one past the sync step's budget StepBudgetExceededError
        (``asked``: the server's Retry-After asked for it): sleeping first only overshot the budget, by up to the
        retry policy's clamp, before the same error."""
        if self.bounds is not None:
            self.bounds.check_wait(method, url, seconds, asked=asked)
        check_step_wait(seconds, f"{method} {redact_url(url)}", asked=asked)
        self.policy.sleep(seconds)
        self.attempt += 1

    def start_attempt(self, request: httpx.Request) -> float:
        """Cut the request's timeouts to what is left of its deadline (or step budget); returns the start time."""
        return 0.0 if self.bounds is None else self.bounds.start_attempt(request, self.timeout)


def plan_of(request: httpx.Request) -> RequestPlan | None:
    """The plan an EHR client attached to ``request``; None for calls that only pass through (token grants)."""
    plan = request.extensions.get(PLAN_EXTENSION)
    return plan if isinstance(plan, RequestPlan) else None


def app_key(client_id: str | None) -> str:
    """What stands for an OAuth client id in a request: itself, or its digest when long (a registration-issued id
    may be a multi-KB JWT, and every quota hold keeps one); "" for none."""
    if not client_id:
        return ""
    return client_id if len(client_id) <= 64 else "sha256:" + hashlib.sha256(client_id.encode()).hexdigest()[:32]


def app_of(request: httpx.Request) -> str:
    """The OAuth client id ``request`` is made for: its plan's ``app``, else :data:`APP_EXTENSION`; "" unknown."""
    plan = request.extensions.get(PLAN_EXTENSION)
    app = plan.app if isinstance(plan, RequestPlan) else request.extensions.get(APP_EXTENSION, "")
    return app if isinstance(app, str) else ""


class PlannedTransport(httpx.BaseTransport):
    """A layer that acts on requests carrying a :class:`RequestPlan` and passes every other request through."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        plan = plan_of(request)
        if plan is None:
            return self._inner.handle_request(request)
        return self.handle_planned(request, plan)

    def handle_planned(self, request: httpx.Request, plan: RequestPlan) -> httpx.Response:
        raise NotImplementedError

    def close(self) -> None:
        self._inner.close()
