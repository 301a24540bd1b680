"""The vendor's call budget on the EHR request path (:mod:`connectors.http.ratelimit`): every attempt spends one
call of the budget active where it is sent (:func:`~connectors.http.ratelimit.rate_budget`), and its wait for it is
held to the same bounds as a wait for the EHR's quota (:mod:`.waits`): one that would end past a transfer's deadline
raises ``TransferDeadlineError``, past a SMART call's deadline or the step's budget ``CallBudgetBusyError`` (a
throttle, like a spent quota's ``QuotaExhaustedError``), at once and with nothing sent (no call of the budget taken),
instead of sleeping to the end and then sending a request already out of time.
"""

from __future__ import annotations

import time

import httpx

from connectors.errors import CallBudgetBusyError, TransferDeadlineError
from connectors.http.ratelimit import CallBudget, current_rate_budget
from connectors.http.urls import redact_url
from connectors.transport.plan import plan_of
from connectors.transport.waits import wait_cap

__all__ = ["BudgetTransport"]


class BudgetTransport(httpx.BaseTransport):
    """Spends one call of the active rate budget per attempt (none without one), the wait bounded (module docstring)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        active = current_rate_budget()
        if active is not None:
            _spend(request, *active)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _spend(request: httpx.Request, budget: CallBudget, key: str) -> None:
    plan = plan_of(request)
    cap, bound = wait_cap(request, plan, None, "")
    transfer = None if plan is None or plan.bounds is None else plan.bounds.transfer
    left = None if transfer is None else transfer.left_s()
    if left is not None and (cap is None or left < cap):
        cap, bound = left, ""  # the transfer's deadline: its own error
    started = time.monotonic()
    try:
        budget.acquire(key, cap)
    except CallBudgetBusyError as exc:
        wait = exc.retry_after
        if cap is None or wait is None or wait <= cap - (time.monotonic() - started):
            raise  # the budget's own bound (the shared budget's longest wait), not this request's
        url = redact_url(str(request.url))
        if not bound:
            raise TransferDeadlineError(
                f"{request.method} {url}: the vendor's call budget had no free call for {wait:.1f} s and only "
                f"{cap:.1f} s were left of its transfer deadline; nothing was sent"
            ) from exc
        raise CallBudgetBusyError(
            f"{request.method} {url} was not sent: the vendor's call budget had no free call within {bound} (the "
            f"next in {wait:.1f} s); try again shortly",
            retry_after=wait,
        ) from exc
