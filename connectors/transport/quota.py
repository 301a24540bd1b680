"""The EHR's own quota as its answers report it (:mod:`connectors.http.quota`): the layer between the retries and
the vendor rate budget reads the quota headers of every answer (2xx included). Once they say no call is left
until a known reset, the next request under the same key waits for that reset (plus :data:`MARGIN_S`: servers
round it) when it comes within the longest wait ehrsync accepts from a ``Retry-After`` (the retry policy's
clamp, 15 min; a SMART call's request deadline when shorter), else it is refused at once with
:class:`~connectors.errors.QuotaExhaustedError` and nothing is sent; so is one whose wait would end past the sync
step's budget or a transfer's deadline (:mod:`.waits`). A later answer saying calls remain lifts the hold.
Headers saying no call is left without saying when they come back (a ``Remaining`` of 0 and no ``Reset``; a
``RateLimit`` item with ``r=0`` and no ``t``) hold the key for :data:`NO_RESET_HOLD_S` (60 s: a per-minute window,
athenahealth's OAuth quota, has come round by then) and are treated as such a reset: the next request waits for it
or is refused; the answer after it, saying calls remain or not, lifts or renews the hold (the quota logged once).

Kept per process under (scope, lane, origin, app): scope is the key of the vendor budget the request runs under (the
FHIR base a session spends under, :func:`connectors.http.rate_scope`; empty outside one), lane ``api`` for FHIR
and Bulk requests and ``oauth`` for SMART/OAuth calls (token endpoint, discovery: requests without a
:class:`~connectors.transport.plan.RequestPlan`), so an OAuth per-minute quota never holds FHIR requests nor the
reverse, and where: the origin answering an API request (a file server's headers say nothing of the FHIR server's
quota), the URL without its query for an OAuth call (one authorization host serves many tenants' token endpoints,
Cerner's ``/tenants/{id}/...``: one tenant's spent quota never holds another's sign-in), and app the OAuth client
the request is made for (:func:`~connectors.transport.plan.app_of`: the client id a FHIR session was given, the one
a token grant authenticates as; empty when unknown), as quotas are granted per app. At most
:data:`MAX_HOLDS` holds are kept: ended ones are dropped whenever a new one is noted, then the soonest to end.
The quota numbers are logged once per reset (WARNING), the first wait for it once (INFO); never a query string.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from connectors.errors import QuotaExhaustedError
from connectors.http.quota import Quota, read_quota
from connectors.http.ratelimit import rate_scope
from connectors.http.retry import RetryPolicy
from connectors.http.urls import redact_url
from connectors.transport.plan import app_of, plan_of
from connectors.transport.waits import wait_cap

__all__ = ["MARGIN_S", "MAX_HOLDS", "NO_RESET_HOLD_S", "QUOTAS", "QuotaBook", "QuotaTransport", "quota_key"]

logger = logging.getLogger(__name__)

#: Waited past the reset a server reports (it rounds its seconds), so the first request after it is not early.
MARGIN_S = 1.0
#: The most holds one process keeps (many hosts over a long-lived process): a hold dropped only means one request
#: more is sent, and the EHR's answer (a 429, or its headers) says so again.
MAX_HOLDS = 1024
#: How long headers saying no call is left, without a reset time, hold their key (module docstring).
NO_RESET_HOLD_S = 60.0
_DEFAULT_POLICY = RetryPolicy()

QuotaKey = tuple[str, str, str, str]


@dataclass
class _Spent:
    until: float  # on the book's monotonic clock, the margin included
    resets_at: datetime
    quota: Quota
    wait_logged: bool = False
    assumed: bool = False  # no reset given: held NO_RESET_HOLD_S; kept once ended (not logged again) until lifted


class QuotaBook:
    """The quotas the EHR said are spent, by :func:`quota_key`; thread-safe. One per process: :data:`QUOTAS`."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._spent: dict[QuotaKey, _Spent] = {}

    def observe(self, key: QuotaKey, headers: httpx.Headers) -> None:
        """Take note of what an answer's headers say about the quota under ``key`` (nothing when they say none)."""
        quota = read_quota(headers, self._wall())
        if quota is None:
            return
        assumed = quota.remaining == 0 and quota.reset_s is None
        if not (quota.spent or assumed):
            if key in self._spent:  # calls again (or a window already begun again): the hold is over
                with self._lock:
                    self._spent.pop(key, None)
            return
        reset_s = NO_RESET_HOLD_S if assumed else float(quota.reset_s or 0.0)
        until = self._clock() + reset_s + MARGIN_S
        with self._lock:
            known = self._spent.get(key)
            fresh = known is None or (until > known.until + 2 * MARGIN_S and not (assumed and known.assumed))
            if known is None:
                self._make_room()
            resets_at = datetime.fromtimestamp(self._wall() + reset_s, UTC)
            self._spent[key] = _Spent(until, resets_at, quota, not fresh and known is not None, assumed)
        if fresh:
            _log_spent(key, quota, reset_s, assumed)

    def held(self, key: QuotaKey) -> tuple[float, _Spent] | None:
        """Seconds left until the spent quota under ``key`` comes back, and its record; None when none is held."""
        entry = self._spent.get(key)
        if entry is None:
            return None
        left = entry.until - self._clock()
        if left > 0:
            return left, entry
        if entry.assumed:  # kept, so the same answer again is not logged again; lifted by calls remaining
            return None
        with self._lock:
            if self._spent.get(key) is entry:
                del self._spent[key]
        return None

    def _make_room(self) -> None:
        """Drop the holds that have ended, then (still full) the soonest to end; the lock is held."""
        now = self._clock()
        for key in [key for key, entry in self._spent.items() if entry.until <= now]:
            del self._spent[key]
        while len(self._spent) >= MAX_HOLDS:
            del self._spent[min(self._spent, key=lambda key: self._spent[key].until)]

    def __len__(self) -> int:
        return len(self._spent)

    def clear(self) -> None:
        """Forget every hold (a test's sandbox port may be reused by the next one's)."""
        with self._lock:
            self._spent.clear()


#: This process's book: every EHR client's layers share it.
QUOTAS = QuotaBook()


def quota_key(request: httpx.Request) -> QuotaKey:
    """(scope, lane, origin, app) of ``request`` (module docstring)."""
    url = request.url
    where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    if plan_of(request) is not None:
        return (rate_scope() or "", "api", where, app_of(request))
    return (rate_scope() or "", "oauth", where + url.path, app_of(request))


def _log_spent(key: QuotaKey, quota: Quota, reset_s: float, assumed: bool) -> None:
    """The quota's numbers, once per reset (never a query string: ``key`` names an origin or a path)."""
    when = f"no reset time given: held {reset_s:.0f} s" if assumed else f"reset in {reset_s:.0f} s"
    logger.warning(
        "the EHR's %s quota at %s is spent: 0 of %s calls remain, %s (%s header)",
        _lane_name(key),
        key[2],
        "?" if quota.limit is None else quota.limit,
        when,
        quota.header,
        extra={"quota_limit": quota.limit, "quota_reset_s": round(reset_s, 1), "quota_reset_given": not assumed},
    )


def _lane_name(key: QuotaKey) -> str:
    return "API" if key[1] == "api" else "OAuth"


class QuotaTransport(httpx.BaseTransport):
    """Holds or refuses a request while the EHR's quota for it is spent; notes the quota each answer reports."""

    def __init__(self, inner: httpx.BaseTransport, book: QuotaBook | None = None) -> None:
        self._inner = inner
        self._book = QUOTAS if book is None else book

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = quota_key(request)
        held = self._book.held(key)
        if held is not None:
            self._hold(request, key, *held)
        response = self._inner.handle_request(request)
        self._book.observe(key, response.headers)
        return response

    def _hold(self, request: httpx.Request, key: QuotaKey, left: float, entry: _Spent) -> None:
        """Wait out a short reset, or raise QuotaExhaustedError (nothing sent) when it is too far away."""
        plan = plan_of(request)
        policy = _DEFAULT_POLICY if plan is None else plan.policy
        url = redact_url(str(request.url))
        throttle = f"the {policy.retry_after_max_s:g} s ehrsync waits for a throttle"
        cap, bound = wait_cap(request, plan, policy.retry_after_max_s, throttle)
        if cap is not None and left > cap:
            raise _exhausted(request.method, url, key, left, entry, bound)
        if plan is not None and plan.bounds is not None:
            plan.bounds.check_wait(request.method, url, left, asked=True)
        if not entry.wait_logged:
            entry.wait_logged = True
            logger.info("waiting %.1f s for the EHR's %s quota to reset", left, _lane_name(key), extra={"url": url})
        policy.sleep(left)


def _exhausted(method: str, url: str, key: QuotaKey, left: float, entry: _Spent, bound: str) -> QuotaExhaustedError:
    quota = entry.quota
    name = f"{_lane_name(key)} quota" + (f" {quota.policy!r}" if quota.policy else "")
    size = "" if quota.limit is None else f" of {quota.limit}"
    until = (
        f"and no reset time: held {NO_RESET_HOLD_S:g} s, until" if entry.assumed else "until"
    ) + f" {entry.resets_at:%Y-%m-%dT%H:%M:%SZ}, {left:.0f} s from now"
    return QuotaExhaustedError(
        f"{method} {url} was not sent: the EHR's {name} at {key[2]} is spent (its {quota.header} header said 0"
        f"{size} calls remain {until}), longer than {bound}; try again after the reset",
        429,
        url=url,
        retry_after=left,
    )
