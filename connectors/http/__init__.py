"""HTTP helpers shared by every connector, one job per module: wire dates and Retry-After (:mod:`.dates`), the
retry policy (:mod:`.retry`), the vendor rate budget (:mod:`.ratelimit`), the EHR's quota headers (:mod:`.quota`)
and URL rules (:mod:`.urls`).

Kept free of FHIR semantics so every connector throttles, backs off and guards tokens the same way. The
transports and auth flow built from them live in :mod:`connectors.transport`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
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
        has_control_characters,
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
    "has_control_characters",
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

# Each public name's module, imported on first use (``connectors.lazy_exports``).
_HOMES = {
    "parse_http_date": "connectors.http.dates",
    "parse_instant": "connectors.http.dates",
    "parse_retry_after": "connectors.http.dates",
    "CallBudget": "connectors.http.ratelimit",
    "RateLimiter": "connectors.http.ratelimit",
    "active_rate_budget": "connectors.http.ratelimit",
    "rate_budget": "connectors.http.ratelimit",
    "rate_scope": "connectors.http.ratelimit",
    "spend_rate_budget": "connectors.http.ratelimit",
    "RetryPolicy": "connectors.http.retry",
    "checked_url": "connectors.http.urls",
    "has_control_characters": "connectors.http.urls",
    "is_loopback_host": "connectors.http.urls",
    "is_within_base": "connectors.http.urls",
    "normalize_base_url": "connectors.http.urls",
    "outbound_url_guard": "connectors.http.urls",
    "redact_url": "connectors.http.urls",
    "resolve_checked_url": "connectors.http.urls",
    "resolve_url": "connectors.http.urls",
    "same_origin": "connectors.http.urls",
    "url_problem": "connectors.http.urls",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
