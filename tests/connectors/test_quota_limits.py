"""Waits before a request is sent, and throttles, over a real socket (the sandbox): a wait for the vendor's call
budget held to the same bounds as a wait for the EHR's quota (a step's budget, a transfer's deadline, a SMART call's
deadline); a throttle whose own answer says it lasts longer than ehrsync waits failing at once; quota headers saying
no call is left without a reset; quota holds kept per app (OAuth client)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from connectors.budgets import rate_budget, step_budget
from connectors.errors import (
    CallBudgetBusyError,
    QuotaExhaustedError,
    RateLimitedError,
    StepBudgetExceededError,
    TransferDeadlineError,
)
from connectors.fhir import FhirClient
from connectors.fhir._bounds import BodyBounds
from connectors.http import RateLimiter
from connectors.smart import JwtClientAuth, client_credentials_grant
from connectors.tokens import StaticTokenSource
from connectors.transport import BoundedClient, TransferDeadline
from connectors.transport.quota import QUOTAS
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy


@pytest.fixture(autouse=True)
def _forget_quotas() -> Iterator[None]:
    """Quota holds are per process and keyed by origin: none may reach another test on this sandbox."""
    QUOTAS.clear()
    yield
    QUOTAS.clear()


@pytest.fixture
def sent(ehr: SandboxServer) -> Iterator[tuple[httpx.Client, list[str]]]:
    """A client recording the path of every request it puts on the wire (each attempt its own)."""
    paths: list[str] = []
    with httpx.Client(timeout=30.0, event_hooks={"request": [lambda r: paths.append(r.url.path)]}) as http:
        yield http, paths


def _quota(ehr: SandboxServer, http: httpx.Client, **options: Any) -> None:
    http.post(f"{ehr.base_url}/admin/faults", json={"kind": "quota", "path": "/fhir", **options}).raise_for_status()


def _quota_counts(ehr: SandboxServer, http: httpx.Client) -> dict[str, Any]:
    faults = http.get(f"{ehr.base_url}/admin/faults").json()
    return next(f for f in faults if f["kind"] == "quota")


def _client(
    ehr: SandboxServer, backend: BackendClient, http: httpx.Client, sleeps: list[float], **kw: Any
) -> FhirClient:
    tokens = StaticTokenSource(backend.mint())
    return FhirClient(ehr.fhir_base, tokens, http=http, retry=recording_policy(sleeps), **kw)


# --- the vendor's call budget: a wait past the request's bounds is refused at once, nothing sent ---------------


def test_a_call_budget_wait_past_the_step_budget_is_refused_at_once(ehr, backend, sent) -> None:
    """A budget of 1 call per 300 s, spent: the next read would wait 300 s for it, past the step's 60 s. It is
    refused now (``call_budget_busy``, a throttle: the step's mark is kept), nothing sent. Before, it slept the
    300 s and then sent a request the step budget had already doomed."""
    http, paths = sent
    waits: list[float] = []
    client = _client(ehr, backend, http, [], rate_limit=RateLimiter(1, 300.0, sleep=waits.append))
    patient = ehr.admin.patients()[0]
    client.read("Patient", patient)  # the budget's one call
    with step_budget("landing Patient", 60.0), pytest.raises(CallBudgetBusyError) as info:
        client.read("Patient", patient)
    assert waits == [] and paths == [f"/fhir/Patient/{patient}"]
    message = str(info.value)
    assert "was not sent" in message and "no free call within what is left of landing Patient's 60 s budget" in message
    assert info.value.code == "call_budget_busy" and 250 < (info.value.retry_after or 0) <= 300


def test_a_call_budget_wait_past_a_transfers_deadline_fails_the_transfer_at_once(ehr, backend, sent) -> None:
    """A Bulk file's transfer deadline (every attempt and wait of the file together) with 30 s left: a 300 s wait for
    the budget fails the transfer now (TransferDeadlineError), as a Retry-After past it does."""
    http, paths = sent
    waits: list[float] = []
    client = _client(ehr, backend, http, [], rate_limit=RateLimiter(1, 300.0, sleep=waits.append))
    patient = ehr.admin.patients()[0]
    client.read("Patient", patient)
    url = f"{ehr.fhir_base}/Patient/{patient}"
    bounds = BodyBounds(transfer=TransferDeadline(30.0))
    with pytest.raises(TransferDeadlineError, match="call budget had no free call for"):
        client.session.request("GET", url, handler=lambda r: r.read(), bounds=bounds)
    assert waits == [] and paths == [f"/fhir/Patient/{patient}"]


def test_a_token_calls_wait_for_the_budget_is_held_to_its_request_deadline(ehr, backend, sent) -> None:
    """A SMART call (here a client_credentials grant) waits for the budget no longer than its own deadline, as it
    waits for a spent OAuth quota: a 300 s wait with a 20 s deadline is refused at once, the second grant not sent."""
    _http, paths = sent
    pem = backend._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    auth = JwtClientAuth(backend.client_id, pem, "test-k1")
    waits: list[float] = []
    hooks = {"request": [lambda r: paths.append(r.url.path)]}
    with (
        BoundedClient(bounds=BodyBounds(deadline_s=20.0), timeout=30.0, event_hooks=hooks) as bounded,
        rate_budget(RateLimiter(1, 300.0, sleep=waits.append), "ehr"),
    ):
        client_credentials_grant(backend.token_url, http=bounded, client_auth=auth, scope="system/*.rs")
        refused = r"no free call within the request's 20 s \(EHRSYNC_REQUEST_DEADLINE_S\)"
        with pytest.raises(CallBudgetBusyError, match=refused):
            client_credentials_grant(backend.token_url, http=bounded, client_auth=auth, scope="system/*.rs")
    assert waits == [] and paths == ["/oauth/token"]


# --- a throttle longer than ehrsync waits: the answer is the error, at once --------------------------------------


def test_a_429_asking_longer_than_the_clamp_fails_at_once_carrying_its_retry_after(ehr, backend, sent) -> None:
    """Retry-After 1200 s, past the 900 s ehrsync waits for a throttle (and not absurd): no wait of 900 s and no
    request sent again (before: four waits of 900 s, five requests, then the same error)."""
    http, paths = sent
    sleeps: list[float] = []
    client = _client(ehr, backend, http, sleeps)
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("429", path="/fhir/Patient", times=None, retry_after="1200")
    with pytest.raises(RateLimitedError) as info:
        client.read("Patient", patient)
    assert type(info.value) is RateLimitedError and info.value.retry_after == 1200.0
    assert sleeps == [] and len(paths) == 1


def test_bdx10_a_429_with_an_absurd_retry_after_backs_off_and_is_sent_again(ehr, backend, sent) -> None:
    """BDX-10: a Retry-After of a day (absurd, past ``retry_after_absurd_s``) is not the server's word: the request
    backs off (2 s, ± 20 %) and is sent again, as with no Retry-After at all; it is not taken for a throttle
    longer than ehrsync waits and failed at once."""
    http, paths = sent
    sleeps: list[float] = []
    client = _client(ehr, backend, http, sleeps)
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("429", path="/fhir/Patient", times=1, retry_after="86400")
    assert client.read("Patient", patient)["id"] == patient
    assert len(sleeps) == 1 and 1.6 <= sleeps[0] <= 2.4, sleeps
    assert len(paths) == 2


def test_a_retry_wait_past_the_step_budget_fails_the_step_at_once(ehr, backend, sent) -> None:
    """Retry-After 600 s, within the 900 s ehrsync waits for a throttle, inside a step with 60 s left: the step
    fails now with its budget named and nothing sent again (before: a 600 s wait, then the same budget error, the
    step overrunning its budget by ten times its length)."""
    http, paths = sent
    sleeps: list[float] = []
    client = _client(ehr, backend, http, sleeps)
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("429", path="/fhir/Patient", times=None, retry_after="600")
    with step_budget("landing Patient", 60.0), pytest.raises(StepBudgetExceededError) as info:
        client.read("Patient", patient)
    assert "landing Patient would exceed its 60 s budget" in str(info.value) and "asked to wait 600 s" in str(
        info.value
    )
    assert sleeps == [] and len(paths) == 1
    ehr.admin.clear_faults()
    ehr.admin.set_fault("429", path="/fhir/Patient", times=1, retry_after="5")
    with step_budget("landing Patient", 60.0):
        assert client.read("Patient", patient)["id"] == patient  # a wait that fits is still waited
    assert sleeps == [5.0]


def test_a_429_whose_quota_resets_later_than_ehrsync_waits_fails_at_once(ehr, backend, sent) -> None:
    """A 429 whose quota headers say no call is left for a day (its Retry-After, 86400, is absurd by BDX-10 and
    ignored): the answer is the error (a RateLimitedError: this request was sent, so it is a try), its retry_after
    the reset; nothing is waited for or sent again. Before, it backed off, then the hold refused the retry."""
    http, paths = sent
    sleeps: list[float] = []
    client = _client(ehr, backend, http, sleeps)
    patient = ehr.admin.patients()[0]
    _quota(ehr, http, quota=1, window_s=86_400, quota_headers="x")
    client.read("Patient", patient)  # the day's one call
    QUOTAS.clear()  # as in a new process: nothing held, the next request goes out and is refused
    with pytest.raises(RateLimitedError) as info:
        client.read("Patient", patient)
    assert type(info.value) is RateLimitedError and 86_000 < (info.value.retry_after or 0) <= 86_400
    assert sleeps == [] and [p for p in paths if p.startswith("/fhir")] == [f"/fhir/Patient/{patient}"] * 2
    assert _quota_counts(ehr, http)["refused"] == 1


# --- quota headers saying no call is left, without a reset ------------------------------------------------------


def test_no_call_left_without_a_reset_holds_the_next_request(ehr, backend, sent, caplog) -> None:
    """``X-RateLimit-Remaining: 0`` and no reset: the next request is held 60 s (NO_RESET_HOLD_S), so one with only
    30 s of its step left is refused at once (``quota_exhausted``), nothing sent. Before, it was sent and refused."""
    http, _paths = sent
    sleeps: list[float] = []
    client = _client(ehr, backend, http, sleeps)
    patient = ehr.admin.patients()[0]
    _quota(ehr, http, quota=1, window_s=86_400, quota_headers="x_no_reset")
    caplog.set_level(logging.INFO, logger="connectors.transport.quota")
    client.read("Patient", patient)
    with step_budget("landing Patient", 30.0), pytest.raises(QuotaExhaustedError) as info:
        client.read("Patient", patient)
    message = str(info.value)
    assert "said 0 of 1 calls remain and no reset time: held 60 s" in message, message
    assert "what is left of landing Patient's 30 s budget" in message
    assert sleeps == [] and _quota_counts(ehr, http)["requests"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no reset time given: held 60 s" in warnings[0], warnings


# --- holds kept per app ---------------------------------------------------------------------------------------


def test_one_apps_spent_quota_does_not_hold_another_apps_requests(ehr, backend, sent) -> None:
    """Two apps (client ids) at one FHIR base: app A's quota spent for a day holds A's next request (refused, not
    sent), not app B's, which goes out (here the sandbox, counting every app together, answers it 429)."""
    http, _paths = sent
    app_a = _client(ehr, backend, http, [], client_id="app-a")
    app_b = _client(ehr, backend, http, [], client_id="app-b")
    patient = ehr.admin.patients()[0]
    _quota(ehr, http, quota=1, window_s=86_400, quota_headers="ietf")
    app_a.read("Patient", patient)
    with pytest.raises(QuotaExhaustedError):
        app_a.read("Patient", patient)
    assert _quota_counts(ehr, http)["requests"] == 1
    with pytest.raises(RateLimitedError) as info:
        app_b.read("Patient", patient)
    assert not isinstance(info.value, QuotaExhaustedError)  # sent, and answered by the EHR
    assert _quota_counts(ehr, http)["requests"] == 2
