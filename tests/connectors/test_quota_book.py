"""The process's book of spent quotas (connectors.transport.quota): what is held under which key, a reset already
past holding nothing, and a bounded size over a long-lived process that meets many hosts."""

from __future__ import annotations

import logging

import httpx

from connectors.http import RetryPolicy
from connectors.transport.plan import APP_EXTENSION, RequestPlan, app_key
from connectors.transport.quota import MARGIN_S, MAX_HOLDS, NO_RESET_HOLD_S, QuotaBook, quota_key

WALL = 1_800_000_000.0


class _Clock:
    """The book's monotonic clock, moved by the test (the book takes its clock as a parameter)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _spent(reset_s: float) -> httpx.Headers:
    return httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{reset_s:g}"})


def _token_request(url: str) -> httpx.Request:
    return httpx.Request("POST", url, data={"grant_type": "refresh_token"})


def test_one_tenants_spent_token_endpoint_quota_does_not_hold_another_tenants_on_the_same_host():
    """Cerner serves every tenant's token endpoint from one authorization host: tenant A's OAuth quota spent must
    not hold (or refuse) tenant B's code exchange or refresh."""
    book = QuotaBook(wall=lambda: WALL)
    host = "https://authorization.example.com/tenants"
    tenant_a = _token_request(f"{host}/aaaa/protocols/oauth2/profiles/smart-v1/token")
    tenant_b = _token_request(f"{host}/bbbb/protocols/oauth2/profiles/smart-v1/token")
    book.observe(quota_key(tenant_a), _spent(3600))
    assert book.held(quota_key(tenant_a)) is not None
    assert book.held(quota_key(tenant_b)) is None
    again = _token_request(f"{host}/aaaa/protocols/oauth2/profiles/smart-v1/token?x=1")
    assert book.held(quota_key(again)) is not None  # the same endpoint, whatever its query


def test_a_reset_already_past_or_zero_holds_nothing():
    book = QuotaBook(wall=lambda: WALL)
    key = ("", "api", "https://ehr.example.com", "")
    book.observe(key, _spent(0))
    assert book.held(key) is None
    book.observe(key, httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{WALL - 30:.0f}"}))
    assert book.held(key) is None
    assert len(book) == 0


def test_the_book_stays_bounded_over_many_hosts():
    clock = _Clock()
    book = QuotaBook(clock=clock, wall=lambda: WALL)
    for n in range(MAX_HOLDS + 50):
        book.observe(("", "api", f"https://files{n}.example.com", ""), _spent(60 + n))
    assert len(book) == MAX_HOLDS
    latest = ("", "api", f"https://files{MAX_HOLDS + 49}.example.com", "")
    assert book.held(latest) is not None  # the newest holds are kept, the soonest to end dropped
    assert book.held(("", "api", "https://files0.example.com", "")) is None
    clock.now += 10_000  # every hold has ended: the next one noted drops them all
    book.observe(("", "api", "https://ehr.example.com", ""), _spent(60))
    assert len(book) == 1


def test_no_call_left_without_a_reset_holds_a_short_while_logged_once_and_calls_remaining_lift_it(caplog):
    """``Remaining: 0`` with no reset: held NO_RESET_HOLD_S (the margin added); once that passed, the same answer
    again holds again without a second WARNING; an answer saying calls remain lifts the hold at once."""
    clock = _Clock()
    book = QuotaBook(clock=clock, wall=lambda: WALL)
    key = ("", "api", "https://ehr.example.com", "")
    none_left = httpx.Headers({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0"})
    caplog.set_level(logging.INFO, logger="connectors.transport.quota")
    book.observe(key, none_left)
    held = book.held(key)
    assert held is not None and held[0] == NO_RESET_HOLD_S + MARGIN_S
    clock.now += NO_RESET_HOLD_S + MARGIN_S
    assert book.held(key) is None
    book.observe(key, none_left)
    assert book.held(key) is not None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    book.observe(key, httpx.Headers({"X-RateLimit-Remaining": "5"}))
    assert book.held(key) is None and len(book) == 0
    book.observe(key, httpx.Headers({"RateLimit": '"day";r=0'}))  # the IETF form without ``t``
    assert book.held(key) is not None


def test_holds_are_kept_per_app() -> None:
    """Two OAuth clients at one FHIR base and one token endpoint: one's spent quota holds only its own requests."""
    book = QuotaBook(wall=lambda: WALL)
    policy = RetryPolicy()
    api_a, api_b = (
        httpx.Request(
            "GET", "https://ehr.example.com/fhir/Patient", extensions=RequestPlan(policy, app=app).extensions()
        )
        for app in ("app-a", "app-b")
    )
    token_a, token_b = (_token_request("https://ehr.example.com/token") for _ in range(2))
    token_a.extensions[APP_EXTENSION], token_b.extensions[APP_EXTENSION] = "app-a", "app-b"
    book.observe(quota_key(api_a), _spent(3600))
    book.observe(quota_key(token_a), _spent(3600))
    assert book.held(quota_key(api_a)) is not None and book.held(quota_key(token_a)) is not None
    assert book.held(quota_key(api_b)) is None and book.held(quota_key(token_b)) is None
    assert app_key("x" * 5000) == app_key("x" * 5000) and len(app_key("x" * 5000)) < 64  # a JWT client id: short
