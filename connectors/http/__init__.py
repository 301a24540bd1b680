"""HTTP helpers shared by every connector, one job per module: wire dates and Retry-After (:mod:`.dates`), the
retry policy (:mod:`.retry`), the vendor rate budget (:mod:`.ratelimit`), the EHR's quota headers (:mod:`.quota`)
and URL rules (:mod:`.urls`).

Kept free of FHIR semantics so every connector throttles, backs off and guards tokens the same way. The
transports and auth flow built from them live in :mod:`connectors.transport`.
"""

from connectors.http.dates import parse_http_date, parse_instant, parse_retry_after
from connectors.http.ratelimit import (
    CallBudget,
    RateLimiter,
    active_rate_budget,
    rate_budget,
    rate_scope,
    spend_rate_budget,
)
from connectors.http.retry import RetryPolicy
from connectors.http.urls import (
    checked_url,
    is_loopback_host,
    is_within_base,
    normalize_base_url,
    outbound_url_guard,
    redact_url,
    resolve_checked_url,
    resolve_url,
    same_origin,
    url_problem,
)

__all__ = [
    "CallBudget",
    "RateLimiter",
    "RetryPolicy",
    "active_rate_budget",
    "checked_url",
    "is_loopback_host",
    "is_within_base",
    "normalize_base_url",
    "outbound_url_guard",
    "parse_http_date",
    "parse_instant",
    "parse_retry_after",
    "rate_budget",
    "rate_scope",
    "redact_url",
    "resolve_checked_url",
    "resolve_url",
    "same_origin",
    "spend_rate_budget",
    "url_problem",
]
