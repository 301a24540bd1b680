"""Bounded against any server, over a real socket (issue 10): byte limit per JSON body, overall deadline per
request and per step, an unreachable EHR failing fast, token calls spending the vendor's rate budget, and
OperationOutcome diagnostics in the error message."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from connectors.budgets import (
    STEP_SETTING,
    check_step_budget,
    forget_unreachable,
    rate_budget,
    step_budget,
    step_deadline,
)
from connectors.errors import (
    ConfigurationError,
    EhrUnreachableError,
    FhirError,
    RequestDeadlineError,
    ResponseTooLargeError,
    StepBudgetExceededError,
)
from connectors.fhir import FhirClient
from connectors.fhir._bounds import BodyBounds
from connectors.http import RateLimiter
from connectors.smart import JwtClientAuth, client_credentials_grant
from connectors.tokens import StaticTokenSource
from connectors.transport import BoundedClient, bounds_of, ehr_client
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy


def _client(ehr: SandboxServer, backend: BackendClient, bounds: BodyBounds | None = None) -> FhirClient:
    tokens = StaticTokenSource(backend.mint(), refresher=backend.mint)
    return FhirClient(ehr.fhir_base, tokens, retry=recording_policy([]), bounds=bounds)


def test_huge_search_page_fails_clearly_naming_url_and_limit(ehr: SandboxServer, backend: BackendClient) -> None:
    """The sandbox streams a 256 MiB Bundle without Content-Length; the client stops at its limit."""
    client = _client(ehr, backend, BodyBounds(max_bytes=1024 * 1024))
    ehr.admin.set_fault("huge_body", path="/fhir/Observation")
    started = time.monotonic()
    with pytest.raises(ResponseTooLargeError) as info:
        list(client.search_pages("Observation", {"_lastUpdated": "gt2000-01-01"}))
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert f"{ehr.fhir_base}/Observation" in message and "1048576-byte" in message
    assert "EHRSYNC_MAX_RESPONSE_BYTES" in message and "_lastUpdated" not in message  # redacted URL
    assert info.value.code == "response_too_large"


def test_response_limit_comes_from_the_environment(
    ehr: SandboxServer, backend: BackendClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "2000")
    client = _client(ehr, backend)
    assert client.bounds.max_bytes == 2000
    with pytest.raises(ResponseTooLargeError, match="2000-byte"):
        list(client.search_pages("Observation", {"_count": "50"}))
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="EHRSYNC_MAX_RESPONSE_BYTES"):
        BodyBounds.from_env()


def test_trickling_server_is_cut_off_by_the_request_deadline(ehr: SandboxServer, backend: BackendClient) -> None:
    """One byte every 0.2 s never trips httpx's per-chunk read timeout; the overall deadline does. 3 s, not 1: the
    read after the fault has the same deadline, and a busy CI machine may answer it in over a second."""
    client = _client(ehr, backend, BodyBounds(deadline_s=3.0))
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("trickle", path="/fhir/Patient", delay_s=0.2)
    started = time.monotonic()
    with pytest.raises(RequestDeadlineError, match="still sending after 3 s") as info:
        client.read("Patient", patient)
    assert time.monotonic() - started < 15  # the trickled Patient (hundreds of bytes) would take minutes
    assert info.value.code == "request_deadline_exceeded"
    assert client.read("Patient", patient)["id"] == patient  # the fault fired once; the next read is fine


def test_step_budget_bounds_a_request_in_flight(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, BodyBounds(deadline_s=60.0))
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("trickle", path="/fhir/Patient", delay_s=0.2)
    started = time.monotonic()
    with step_budget("landing Patient", 1.0), pytest.raises(StepBudgetExceededError, match="1 s budget"):
        client.read("Patient", patient)
    assert time.monotonic() - started < 5
    with step_budget("landing Patient", 0.01):
        time.sleep(0.02)
        with pytest.raises(StepBudgetExceededError):  # spent before the request: nothing is sent
            client.read("Patient", patient)


def test_a_step_budget_inside_another_is_a_phase_of_it_and_says_what_it_keeps() -> None:
    """A reconcile's type spends one budget over its listing, confirmation and read-back: a phase opened inside
    it ends when the type's budget does (not its own full budget later), and running out names the phase and
    says what the phase leaves (``kept``), not a sync's "stored mark"."""
    now = [0.0]
    with step_budget("reconciling Observation", 10.0, clock=lambda: now[0], kept="outer"):
        now[0] = 8.0
        with step_budget("reconciling Observation (confirming)", 10.0, kept="only those confirmed are tombstoned"):
            assert step_deadline() == (10.0, 10.0, "reconciling Observation (confirming)", STEP_SETTING)
            now[0] = 10.0
            with pytest.raises(StepBudgetExceededError) as raised:
                check_step_budget()
    said = str(raised.value)
    assert said == (
        "reconciling Observation (confirming) exceeded its 10 s budget (EHRSYNC_STEP_BUDGET_S); "
        "only those confirmed are tombstoned"
    ), said


def test_a_budget_set_by_another_setting_names_that_setting() -> None:
    """A write-back wait is bounded by its own setting (``lookup_wait_s``), not ``EHRSYNC_STEP_BUDGET_S``: its
    budget error named the sync step's variable, sending an operator to raise the wrong one. Inside a shorter
    outer step, the outer step bounds it, and its setting is the one named."""
    now = [0.0]
    with step_budget("the identifier search", 300.0, clock=lambda: now[0], kept="unknown", setting="lookup_wait_s"):
        now[0] = 300.0
        with pytest.raises(StepBudgetExceededError) as own:
            check_step_budget()
    assert str(own.value) == "the identifier search exceeded its 300 s budget (lookup_wait_s); unknown", own.value
    now[0] = 0.0
    outer_step = step_budget("landing Observation", 5.0, clock=lambda: now[0])
    with outer_step, step_budget("the identifier search", 300.0, kept="unknown", setting="lookup_wait_s"):
        now[0] = 5.0
        with pytest.raises(StepBudgetExceededError) as outer:
            check_step_budget()
    assert "its 5 s budget (EHRSYNC_STEP_BUDGET_S)" in str(outer.value), outer.value


def test_connection_refused_fails_fast_and_is_remembered(refused_port: int) -> None:
    base = f"http://127.0.0.1:{refused_port}/fhir"
    sleeps: list[float] = []
    client = FhirClient(base, StaticTokenSource("t"), retry=recording_policy(sleeps))
    try:
        with pytest.raises(EhrUnreachableError, match=r"cannot reach the EHR at http://127\.0\.0\.1:\d+ ") as info:
            client.read("Patient", "p1")
        assert info.value.code == "ehr_unreachable" and sleeps == [0.5]  # two quick attempts, not minutes
        with pytest.raises(EhrUnreachableError, match="remembered"):
            list(client.search_pages("Observation"))
        assert sleeps == [0.5]  # the second call failed at once, without a retry
    finally:
        forget_unreachable(base.rsplit("/", 1)[0])


def test_dns_failure_is_unreachable_too() -> None:
    base = "https://ehr.invalid/fhir"
    client = FhirClient(base, StaticTokenSource("t"), retry=recording_policy([]))
    try:
        with pytest.raises(EhrUnreachableError, match=r"https://ehr\.invalid"):
            client.capabilities()
    finally:
        forget_unreachable("https://ehr.invalid")


def test_token_calls_spend_the_same_rate_budget(ehr: SandboxServer, backend: BackendClient) -> None:
    """eCW counts token calls: a 401 refresh (a real client_credentials grant) takes from the FHIR budget."""
    pem = backend._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    auth = JwtClientAuth(backend.client_id, pem, "test-k1")
    calls: list[str] = []

    def refresh() -> str:
        calls.append("token")
        return client_credentials_grant(
            backend.token_url, http=client.session.http, client_auth=auth, scope="system/*.rs"
        ).access_token

    waits: list[float] = []
    limiter = RateLimiter(3, 60.0, clock=lambda: 0.0, sleep=waits.append)
    tokens = StaticTokenSource(backend.mint(), refresher=refresh)
    client = FhirClient(ehr.fhir_base, tokens, retry=recording_policy([]), rate_limit=limiter, rate_limit_key="ehr")
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("expired_token", path="/fhir/Patient")
    assert client.read("Patient", patient)["id"] == patient  # FHIR 401, token call, FHIR again: 3 calls
    assert calls == ["token"] and waits == []
    client.read("Patient", patient)  # the 4th call of a 3-call budget waits
    assert len(waits) == 1 and waits[0] > 0
    with rate_budget(limiter, "ehr"):  # token calls made outside a FHIR request, within a step, spend too
        refresh()
    assert len(waits) == 2


def test_operation_outcome_diagnostics_reach_neither_the_error_nor_a_log(
    ehr: SandboxServer, backend: BackendClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(ehr, backend)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FhirError) as info:
        list(client.search_pages("Observation", {"_lastUpdated": "gtnot-a-date"}))
    assert info.value.status == 400
    assert "answered HTTP 400 (issues: error invalid)" in str(info.value)
    assert "is not a FHIR date" not in str(info.value)  # the run's error is logged and shown: no diagnostics
    ours = [r.getMessage() + str(r.__dict__) for r in caplog.records if r.name.startswith(("connectors", "pipelines"))]
    assert not any("is not a FHIR date" in line for line in ours)  # servers may echo patient data there


def test_a_silent_server_is_cut_off_by_the_step_budget(ehr: SandboxServer, backend: BackendClient) -> None:
    """No byte at all for 30 s: the read timeout of each attempt is cut to what is left of the step budget."""
    client = _client(ehr, backend, BodyBounds(deadline_s=60.0))
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("slow", path="/fhir/Patient", delay_s=30.0, times=None)
    started = time.monotonic()
    with step_budget("landing Patient", 1.0), pytest.raises(StepBudgetExceededError):
        client.read("Patient", patient)
    assert time.monotonic() - started < 10


def test_the_request_deadline_cuts_each_attempts_wait_for_headers(ehr: SandboxServer, backend: BackendClient) -> None:
    """3 s, not 1: the retry has the same deadline, and a busy CI machine may answer it in over a second; the
    first attempt, held back 30 s, waits for it only to the deadline."""
    client = _client(ehr, backend, BodyBounds(deadline_s=3.0))
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("slow", path="/fhir/Patient", delay_s=30.0)  # once: the retry is answered at once
    started = time.monotonic()
    assert client.read("Patient", patient)["id"] == patient
    assert time.monotonic() - started < 15


def test_bounds_given_by_the_caller_never_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client built with its own bounds (or over a client carrying them) works whatever the environment says;
    only a call that has no bounds of its own reads it, when it runs."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "lots")
    with httpx.Client() as plain:
        assert FhirClient("https://ehr.example/fhir", None, http=plain, bounds=BodyBounds(1000, 5.0)).bounds.max_bytes
        assert FhirClient("https://ehr.example/fhir", None, bounds=BodyBounds(1000, 5.0)).bounds.deadline_s == 5.0
        assert ehr_client(plain).bounds is None
        with pytest.raises(ConfigurationError, match="EHRSYNC_MAX_RESPONSE_BYTES='lots' is not a whole number"):
            bounds_of(plain)
    with BoundedClient(bounds=BodyBounds(2000, 7.0)) as bounded:
        assert bounds_of(ehr_client(bounded)) == BodyBounds(2000, 7.0)


def test_a_request_sent_again_starts_from_the_timeout_it_was_built_with() -> None:
    """Each attempt cuts the request's timeouts to what is left of its deadline; the next attempt (or a caller
    sending the same request again) starts from the built timeout, not from the previous cut."""
    now = [0.0]
    with httpx.Client(timeout=30.0) as http:
        request = http.build_request("GET", "https://ehr.example/fhir/metadata")
    BodyBounds(None, 5.0, clock=lambda: now[0]).start_attempt(request)
    assert request.extensions["timeout"]["read"] == 5.0
    now[0] = 100.0
    BodyBounds(None, 20.0, clock=lambda: now[0]).start_attempt(request)
    assert request.extensions["timeout"]["read"] == 20.0  # before: min(5.0, 20.0)
