"""How long a request may wait before it is sent, for the EHR's quota to reset (:mod:`.quota`) or for a call of the
vendor's budget (:mod:`.budget`): the bounds both layers hold a wait to, so neither sends a request its deadline
has already doomed.

- a SMART call's request deadline (a request without a :class:`~connectors.transport.plan.RequestPlan` asking for
  :class:`~connectors.transport.bounds.BodyBounds`): a person, or the vault's refresh lock, waits on it. A planned
  request's deadline starts once it is let go (its attempt's), so a wait before it does not count against it;
- what is left of the sync step's budget (``connectors.budgets.step_budget``);
- what is left of a transfer's deadline (a Bulk file's, :class:`~connectors.transport.transfer.TransferDeadline`),
  which the layers check themselves: past it is a ``TransferDeadlineError``, not a throttle.
"""

from __future__ import annotations

import time

import httpx

from connectors.budgets import step_deadline
from connectors.transport.bounds import request_bounds
from connectors.transport.plan import RequestPlan

__all__ = ["wait_cap"]


def wait_cap(
    request: httpx.Request, plan: RequestPlan | None, cap: float | None, bound: str
) -> tuple[float | None, str]:
    """The longest ``request`` may wait before it is sent (None: no bound), and what sets it (for an error's
    message): ``cap`` (named ``bound``), or a SMART call's deadline or what is left of the step's budget when sooner.
    Never below 0."""
    bounds = request_bounds(request) if plan is None else None
    if bounds is not None and bounds.deadline_s is not None and (cap is None or bounds.deadline_s < cap):
        cap, bound = bounds.deadline_s, f"the request's {bounds.deadline_s:g} s (EHRSYNC_REQUEST_DEADLINE_S)"
    step = step_deadline()
    if step is not None:
        left = step[0] - time.monotonic()
        if cap is None or left < cap:
            cap, bound = left, f"what is left of {step[2]}'s {step[1]:g} s budget"
    return (None if cap is None else max(cap, 0.0)), bound
