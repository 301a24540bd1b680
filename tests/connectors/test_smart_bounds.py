"""SMART discovery, JWKS and token calls are bounded like FHIR calls (issue 14, "bound what any server can make you
spend"): each body is decoded a piece at a time and counted against ``EHRSYNC_MAX_RESPONSE_BYTES``, a request
still arriving at ``EHRSYNC_REQUEST_DEADLINE_S`` is cut off, an error answer is read only up to its bound, and
only the codings ehrsync decodes are accepted. Before, these bodies were read whole, for as long as the server
kept sending, inflated by httpx a received chunk at a time."""

from __future__ import annotations

import gzip
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from connectors.budgets import step_budget
from connectors.bulk import BulkClient
from connectors.errors import (
    BulkFileTooLargeError,
    OAuthError,
    RequestDeadlineError,
    ResponseTooLargeError,
    StepBudgetExceededError,
    TransportError,
)
from connectors.smart import JwtClientAuth, SecretClientAuth, client_credentials_grant, discover, refresh_grant
from connectors.tokens import MintingTokenSource
from connectors.transport.decoding import ERROR_BODY_BYTES
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.scripted import Scripted, line_bomb, peak_python_bytes, send

WELL_KNOWN = "/fhir/.well-known/smart-configuration"


def _auth(backend: BackendClient) -> JwtClientAuth:
    pem = backend._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return JwtClientAuth(backend.client_id, pem, "test-k1")


def test_an_endless_smart_configuration_fails_at_the_response_limit(
    ehr: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox streams 256 MiB without Content-Length; discovery stops at the limit, naming URL and limit
    (before, it read every byte and fell back to ``/metadata`` as if the document were merely unusable)."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(1024 * 1024))
    ehr.admin.set_fault("huge_body", path=WELL_KNOWN)
    started = time.monotonic()
    with httpx.Client() as http, pytest.raises(ResponseTooLargeError) as info:
        discover(ehr.fhir_base, http=http)
    assert time.monotonic() - started < 10
    assert f"{ehr.fhir_base}/.well-known/smart-configuration" in str(info.value) and "1048576-byte" in str(info.value)


def test_an_endless_token_answer_is_an_invalid_response(
    ehr: SandboxServer, backend: BackendClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OAuth client cannot use such an answer: ``invalid_response`` (an ``OAuthError``, so the vault records
    the failed grant as it records any other), never a body held whole."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(1024 * 1024))
    ehr.admin.set_fault("huge_body", path="/oauth/token")
    with httpx.Client() as http, pytest.raises(OAuthError) as info:
        client_credentials_grant(backend.token_url, http=http, client_auth=_auth(backend), scope="system/*.rs")
    assert info.value.error == "invalid_response"
    assert "1048576-byte response limit (EHRSYNC_MAX_RESPONSE_BYTES)" in str(info.value)
    with httpx.Client() as http:  # the fault fired once: the next grant is fine
        auth = _auth(backend)
        granted = client_credentials_grant(backend.token_url, http=http, client_auth=auth, scope="system/*.rs")
    assert granted.access_token


def test_a_trickling_token_endpoint_is_cut_off_at_the_request_deadline(
    ehr: SandboxServer, backend: BackendClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte every 0.2 s never trips httpx's per-read timeout; the overall deadline does, as a transport
    failure (transient: the vault keeps a still-valid token and tries again later). 3 s, not 1: the headers come
    once the token endpoint has answered, which a busy CI machine may take over a second to do (then it is the
    deadline on the headers, "no complete answer", not on a body still sending)."""
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "3")
    ehr.admin.set_fault("trickle", path="/oauth/token", delay_s=0.2)
    started = time.monotonic()
    with httpx.Client() as http, pytest.raises(RequestDeadlineError, match="still sending after 3 s") as info:
        client_credentials_grant(backend.token_url, http=http, client_auth=_auth(backend), scope="system/*.rs")
    assert time.monotonic() - started < 15  # the trickled token answer (hundreds of bytes) would take minutes
    assert isinstance(info.value, TransportError)


def test_smart_requests_accept_only_the_codings_ehrsync_decodes(ehr: SandboxServer, backend: BackendClient) -> None:
    """httpx's default ``Accept-Encoding`` adds ``br``/``zstd`` when a package provides them (as the caller's
    client here does); a server answering so would then be refused (``unsupported_content_encoding``)."""
    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(request.headers.get("Accept-Encoding", ""))]}
    with httpx.Client(event_hooks=hooks, headers={"Accept-Encoding": "gzip, deflate, br, zstd"}) as http:
        config = discover(ehr.fhir_base, http=http)
        client_credentials_grant(config.token_endpoint, http=http, client_auth=_auth(backend), scope="system/*.rs")
    assert len(sent) == 2 and set(sent) == {"gzip, deflate"}


def test_a_gzip_smart_configuration_decodes_and_a_gzip_bomb_stops_within_one_piece(
    server: tuple[str, Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, script = server
    document = {
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "capabilities": ["launch-standalone", "client-public"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
    }
    script.actions = [send(200, gzip.compress(orjson.dumps(document)), {"Content-Encoding": "gzip"})]
    with httpx.Client() as http:
        assert discover(f"{base}/fhir", http=http).token_endpoint == f"{base}/token"

    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "2000000")
    script.actions = [send(200, line_bomb(64 * 1024 * 1024), {"Content-Encoding": "gzip"})]
    errors: list[Exception] = []

    def fetch() -> None:
        with httpx.Client() as http:
            try:
                discover(f"{base}/fhir", http=http)
            except ResponseTooLargeError as exc:
                errors.append(exc)

    peak = peak_python_bytes(fetch)
    assert errors and "exceeds the 2000000-byte response limit" in str(errors[0])
    assert peak < 8 * 1024 * 1024, peak  # httpx inflated a received chunk whole: ~64 MB at once


def test_an_endless_gzip_error_page_from_the_token_endpoint_is_read_only_up_to_its_bound(
    server: tuple[str, Scripted],
) -> None:
    """A 400 with a 64 MiB page compressed 1000:1 maps to an OAuth error having held about ``ERROR_BODY_BYTES``."""
    base, script = server
    page = gzip.compress(b"<html>" + b" " * (64 * 1024 * 1024) + b"</html>", compresslevel=9)
    script.actions = [send(400, page, {"Content-Encoding": "gzip"})]
    errors: list[OAuthError] = []

    def grant() -> None:
        with httpx.Client() as http:
            try:
                auth = SecretClientAuth("client", "secret")
                client_credentials_grant(f"{base}/token", http=http, client_auth=auth, scope="system/*.rs")
            except OAuthError as exc:
                errors.append(exc)

    peak = peak_python_bytes(grant)
    assert errors and errors[0].status == 400 and "without an OAuth error body" in str(errors[0])
    assert peak < 2 * ERROR_BODY_BYTES + 4 * 1024 * 1024, peak


_TOKENS = orjson.dumps({"access_token": "new-at", "refresh_token": "rotated-rt", "token_type": "Bearer"})


def test_a_spent_step_sends_no_grant(server: tuple[str, Scripted]) -> None:
    """A grant, once sent, may rotate the refresh token: with the step's budget spent nothing is sent at all (the
    FHIR call waiting for the token would fail on the same budget)."""
    base, script = server
    script.actions = [send(200, _TOKENS)]
    with httpx.Client() as http, step_budget("landing Observation", 0.05):
        time.sleep(0.1)
        with pytest.raises(StepBudgetExceededError):
            refresh_grant(f"{base}/token", http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="old-rt")
    assert script.seen == []


def test_a_token_answer_arriving_after_the_step_budget_is_still_used(server: tuple[str, Scripted]) -> None:
    """The step budget runs out while the server answers: the answer has arrived and its rotated refresh token
    is used, not thrown away (the body read is bounded by the request deadline, not the step's). A 1 s budget, not
    0.3: the grant must be sent before it runs out, which a busy CI machine may not do within 0.3 s."""
    base, script = server

    def late(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(2.0)
        send(200, _TOKENS, {"Content-Type": "application/json"})(handler)

    script.actions = [late]
    with httpx.Client() as http, step_budget("landing Observation", 1.0):
        granted = refresh_grant(f"{base}/token", http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="o")
    assert granted.refresh_token == "rotated-rt" and len(script.seen) == 1


class _DiscoveringTokens:
    """Reads the server's SMART configuration before each token, as the vault does when it refreshes one
    (``store/_grants.py``)."""

    def __init__(self, fhir_base: str, backend: BackendClient) -> None:
        self.fhir_base, self.backend = fhir_base, backend

    def get_token(self) -> str:
        with httpx.Client() as http:
            discover(self.fhir_base, http=http)
        return self.backend.mint()

    def refresh_after_unauthorized(self, rejected: str) -> str:
        return self.get_token()


def test_an_oversized_discovery_document_met_during_a_bulk_download_is_not_an_oversized_file(
    ehr: SandboxServer, backend: BackendClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token refresh made on a file's way fails as itself (``response_too_large`` naming the discovery URL):
    before, every size error inside the download was reported as the file over EHRSYNC_BULK_MAX_FILE_BYTES,
    telling the operator to raise a limit that had nothing to do with it."""
    exporting = BulkClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry))
    manifest = exporting.wait(exporting.kickoff("group", group_id="grp2", types=["Patient"]), deadline_s=60)
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(1024 * 1024))
    ehr.admin.set_fault("huge_body", path=WELL_KNOWN)
    refreshing = BulkClient(ehr.fhir_base, _DiscoveringTokens(ehr.fhir_base, backend))
    with pytest.raises(ResponseTooLargeError) as info:
        refreshing.download(manifest.output[0].url, tmp_path / "Patient.ndjson", True, max_bytes=10**9)
    assert not isinstance(info.value, BulkFileTooLargeError)
    assert "/.well-known/smart-configuration" in str(info.value) and "EHRSYNC_MAX_RESPONSE_BYTES" in str(info.value)
    # the file's own limit is still the file's: the next download (fault spent) over a 100-byte limit
    with pytest.raises(BulkFileTooLargeError, match="EHRSYNC_BULK_MAX_FILE_BYTES"):
        refreshing.download(manifest.output[0].url, tmp_path / "Patient.ndjson", True, max_bytes=100)


def test_a_token_endpoint_holding_back_its_headers_is_cut_off_at_the_request_deadline(
    server: tuple[str, Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline covers the whole attempt, not only the body: the attempt layer cuts httpx's timeouts to it, as
    for FHIR calls (before, a SMART call's deadline started at the answer's headers, and the wait was httpx's
    30 s read timeout)."""
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "1")
    base, script = server

    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(30)
        send(200, _TOKENS, {"Content-Type": "application/json"})(handler)

    script.actions = [slow]
    started = time.monotonic()
    with httpx.Client(timeout=30) as http, pytest.raises(RequestDeadlineError) as info:
        refresh_grant(f"{base}/token", http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="o")
    assert time.monotonic() - started < 6  # cut at the deadline, not the answer 30 s later
    # the deadline, named as such (the vault does not retry it, store/_grants.py), not a plain timeout
    assert f"POST {base}/token got no complete answer within 1 s (EHRSYNC_REQUEST_DEADLINE_S)" in str(info.value)
