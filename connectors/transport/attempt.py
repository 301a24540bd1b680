"""One attempt's limits, the innermost EHR layer (below the rate budget, so waiting for the budget does not
count against a request's deadline): timeouts cut to what is left of the deadline or step budget, the body
byte limit and deadline (:class:`~connectors.transport.bounds.BodyBounds`), error answers read at once up to a
bounded size (:func:`~connectors.transport.decoding.error_answer`), and the caller's look at every answer
(``on_response``, e.g. athenahealth quota headers)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from connectors.transport.bounds import BodyBounds, request_bounds
from connectors.transport.decoding import error_answer
from connectors.transport.network import attempt_deadline
from connectors.transport.plan import PlannedTransport, RequestPlan, plan_of

__all__ = ["AttemptTransport"]


class AttemptTransport(PlannedTransport):
    """Applies the request's :class:`~connectors.transport.plan.RequestPlan` to each single attempt; a request
    without a plan that asks for :class:`~connectors.transport.bounds.BodyBounds` (SMART calls) gets the same
    limits, nothing else. The deadline reaches every socket operation of the attempt (headers included,
    :mod:`connectors.transport.network`); a wait cut to it that runs out is a timeout, which a plan may retry
    (each attempt has its own deadline) and a plan-less caller may tell apart (``BodyBounds.attempt_overran``)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        bounds = request_bounds(request) if plan_of(request) is None else None
        if bounds is None:
            return super().handle_request(request)
        return self._attempt(request, bounds, bounds.start_attempt(request), None)

    def handle_planned(self, request: httpx.Request, plan: RequestPlan) -> httpx.Response:
        return self._attempt(request, plan.bounds, plan.start_attempt(request), plan.on_response)

    def _attempt(
        self,
        request: httpx.Request,
        bounds: BodyBounds | None,
        started: float,
        on_response: Callable[[httpx.Response], None] | None,
    ) -> httpx.Response:
        response = self._send(request, bounds, started)
        response.request = request
        try:
            if bounds is not None:
                bounds.headers_in(request)
                bounds.wrap(response, request.method, started)
            if response.status_code >= 400:  # read now, bounded: every layer above reads error bodies whole
                response = error_answer(response)
            if on_response is not None:
                on_response(response)
        except BaseException:
            response.close()
            raise
        return response

    def _send(self, request: httpx.Request, bounds: BodyBounds | None, started: float) -> httpx.Response:
        """The attempt up to the answer's headers, every socket operation within its deadline."""
        if bounds is None:
            return self._inner.handle_request(request)
        with attempt_deadline(bounds.ends_at(started), bounds.clock):
            return self._inner.handle_request(request)
