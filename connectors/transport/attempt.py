"""One attempt's limits, the innermost EHR layer (below the rate budget, so waiting for the budget does not
count against a request's deadline): timeouts cut to what is left of the deadline or step budget, the body
byte limit and deadline (:class:`~connectors.transport.bounds.BodyBounds`), error answers read at once up to a
bounded size (:func:`~connectors.transport.decoding.error_answer`), and the caller's look at every answer
(``on_response``, e.g. athenahealth quota headers)."""

from __future__ import annotations

import httpx

from connectors.transport.decoding import error_answer
from connectors.transport.plan import PlannedTransport, RequestPlan

__all__ = ["AttemptTransport"]


class AttemptTransport(PlannedTransport):
    """Applies the request's :class:`~connectors.transport.plan.RequestPlan` to each single attempt."""

    def handle_planned(self, request: httpx.Request, plan: RequestPlan) -> httpx.Response:
        started = plan.start_attempt(request)
        response = self._inner.handle_request(request)
        response.request = request
        try:
            if plan.bounds is not None:
                plan.bounds.wrap(response, request.method, started)
            if response.status_code >= 400:  # read now, bounded: every layer above reads error bodies whole
                response = error_answer(response)
            if plan.on_response is not None:
                plan.on_response(response)
        except BaseException:
            response.close()
            raise
        return response
