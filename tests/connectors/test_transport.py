"""The EHR transport layers over httpx.MockTransport: the bearer Auth flow (refresh once on 401, never log a
token) and the retrying transport (Retry-After as seconds or HTTP-date, backoff, attempt budget, rate budget)."""

from __future__ import annotations

import logging
from datetime import timedelta
from email.utils import format_datetime

import httpx
import pytest

from connectors.errors import FhirUnauthorizedError, NeedsReauthError, TransportError
from connectors.fhir import FhirClient
from connectors.http import RateLimiter, rate_budget
from connectors.smart._http import post_form
from connectors.tokens import StaticTokenSource
from connectors.transport import BearerAuth, BodyBounds, RequestPlan, ehr_client
from tests.connectors.helpers import BASE, FIXED_NOW, TOKEN, Script, recording_policy

FRESH = "tok-FRESH-secret"


def _send(script: Script, plan: RequestPlan | None, method: str = "GET") -> httpx.Response:
    """One request through the layers in front of the script's plain client, as the FHIR session sends it."""
    http = script.client()
    extensions = plan.extensions() if plan is not None else None
    request = http.build_request(method, f"{BASE}/Patient", extensions=extensions)
    return ehr_client(http).send(request)


# --- the Auth flow ---------------------------------------------------------------------------------------


def test_auth_flow_refreshes_once_on_401_and_retries_with_the_new_token() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: FRESH)
    script = Script(httpx.Response(401), httpx.Response(200))
    auth = BearerAuth(tokens)
    response = script.client().get(f"{BASE}/Patient", auth=auth)
    assert response.status_code == 200
    assert [r.headers["Authorization"] for r in script.requests] == [f"Bearer {TOKEN}", f"Bearer {FRESH}"]
    assert tokens.refresh_count == 1 and auth.refreshed


def test_auth_flow_refreshes_once_not_twice() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: FRESH)
    script = Script(httpx.Response(401), httpx.Response(401))
    auth = BearerAuth(tokens)
    response = script.client().get(f"{BASE}/Patient", auth=auth)
    assert response.status_code == 401  # handed back: the caller raises FhirUnauthorizedError
    assert len(script.requests) == 2 and tokens.refresh_count == 1


def test_auth_flow_passes_other_answers_untouched() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: FRESH)
    script = Script(httpx.Response(403))
    assert script.client().get(f"{BASE}/Patient", auth=BearerAuth(tokens)).status_code == 403
    assert tokens.refresh_count == 0


def test_auth_flow_without_a_refresher_raises_needs_reauth() -> None:
    script = Script(httpx.Response(401))
    with pytest.raises(NeedsReauthError):
        script.client().get(f"{BASE}/Patient", auth=BearerAuth(StaticTokenSource(TOKEN)))


def test_fhir_session_raises_unauthorized_after_its_one_refresh_and_never_logs_a_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = StaticTokenSource(TOKEN, refresher=lambda: FRESH)
    script = Script(httpx.Response(401), httpx.Response(401))
    client = FhirClient(BASE, tokens, http=script.client(), retry=recording_policy([]))
    with pytest.raises(FhirUnauthorizedError, match="again after a token refresh"):
        client.read("Patient", "p1")
    assert tokens.refresh_count == 1 and len(script.requests) == 2
    assert any("refreshing the token once" in r.getMessage() for r in caplog.records)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert TOKEN not in logged and FRESH not in logged


# --- the retrying transport ------------------------------------------------------------------------------


def test_retry_after_seconds_is_waited_out() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200))
    assert _send(script, RequestPlan(recording_policy(sleeps))).status_code == 200
    assert sleeps == [7.0] and len(script.requests) == 2


def test_retry_after_http_date_is_waited_out() -> None:
    sleeps: list[float] = []
    when = format_datetime(FIXED_NOW + timedelta(seconds=30), usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200))
    assert _send(script, RequestPlan(recording_policy(sleeps))).status_code == 200
    assert sleeps == [pytest.approx(30.0)]


def test_unusable_retry_after_backs_off_and_is_clamped() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.Response(429, headers={"Retry-After": "soon"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(200),
    )
    _send(script, RequestPlan(recording_policy(sleeps, jitter=0.0)))
    assert sleeps == [2.0, 2.0]  # backoff start, then 0 s clamped up to the 2 s minimum


def test_attempt_budget_returns_the_last_answer() -> None:
    sleeps: list[float] = []
    script = Script(*[httpx.Response(500) for _ in range(3)])
    response = _send(script, RequestPlan(recording_policy(sleeps, max_attempts=3, jitter=0.0)))
    assert response.status_code == 500 and len(script.requests) == 3 and sleeps == [2.0, 4.0]


def test_transient_answer_is_not_repeated_for_a_post_but_a_throttle_is() -> None:
    sleeps: list[float] = []
    assert (
        _send(Script(httpx.Response(500)), RequestPlan(recording_policy(sleeps), idempotent=False), "POST").status_code
        == 500
    )
    throttled = Script(httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(201))
    assert _send(throttled, RequestPlan(recording_policy(sleeps), idempotent=False), "POST").status_code == 201
    assert sleeps == [3.0]


def test_transport_errors_back_off_then_raise_a_typed_error() -> None:
    sleeps: list[float] = []
    boom = httpx.ReadTimeout("slow")
    script = Script(boom, boom, boom)
    with pytest.raises(TransportError, match=r"GET https://ehr.example.org/fhir/r4/Patient failed after 3 attempt"):
        _send(script, RequestPlan(recording_policy(sleeps, max_attempts=3, jitter=0.0)))
    assert sleeps == [2.0, 4.0]


def test_requests_without_a_plan_are_sent_once() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "1"}))
    assert _send(script, None).status_code == 503 and len(script.requests) == 1


def test_each_attempt_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs every request a client sends, and the layers send through a second client: the EhrClient's own
    line repeated the last attempt's (``ehrsync -v`` showed every request twice). One line per request sent."""
    script = Script(httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(200))
    with caplog.at_level(logging.INFO, logger="httpx"):
        assert _send(script, RequestPlan(recording_policy([]))).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == [
        f'HTTP Request: GET {BASE}/Patient "HTTP/1.1 503 Service Unavailable"',
        f'HTTP Request: GET {BASE}/Patient "HTTP/1.1 200 OK"',
    ]


def test_every_attempt_spends_from_the_active_rate_budget() -> None:
    waits: list[float] = []
    limiter = RateLimiter(2, 60.0, clock=lambda: 0.0, sleep=waits.append)
    script = Script(httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(200))
    with rate_budget(limiter, "ehr"):
        _send(script, RequestPlan(recording_policy([])))  # two attempts: the whole bucket
        assert waits == []
        post_form(Script(httpx.Response(200, json={})).client(), "https://ehr.example.org/token", {"a": "b"})
    assert len(waits) == 1 and waits[0] > 0  # the token call waited for the same budget


def test_waiting_for_the_rate_budget_does_not_count_against_the_request_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(1, 300.0, clock=lambda: now[0], sleep=sleep)
    bounds = BodyBounds(max_bytes=1000, deadline_s=120.0, clock=lambda: now[0])
    with rate_budget(limiter, "ehr"):
        assert _send(Script(httpx.Response(200, content=b"{}")), RequestPlan(recording_policy([]), bounds=bounds))
        response = _send(Script(httpx.Response(200, content=b"{}")), RequestPlan(recording_policy([]), bounds=bounds))
    assert now[0] == 300.0 and response.content == b"{}"  # waited 300 s for the budget, then read within 120 s
