"""Faults only a real socket can show: dropped bodies, read timeouts, resets, gzip on the wire (BDX-17/18),
including bodies that inflate far past their size on the wire.

A tiny scripted HTTP server on 127.0.0.1:0 (``tests/connectors/scripted.py``) plays the EHR; the sandbox
integration tests cover the rest.
"""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.bulk import BulkClient, verify_ndjson_file
from connectors.errors import (
    BulkExportError,
    FhirError,
    ResponseTooLargeError,
    TransportError,
    UnsupportedContentEncodingError,
)
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.transport import BodyBounds
from connectors.transport.decoding import ERROR_BODY_BYTES
from tests.connectors.helpers import TOKEN, recording_policy
from tests.connectors.scripted import Action, Scripted, line_bomb, peak_python_bytes, send


def truncated(body: bytes) -> Action:
    """Promise the full length, send half, then drop the connection."""

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    return act


def reset(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    h.connection.close()


def slow(seconds: float) -> Action:
    def act(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        send(200, b"{}")(h)

    return act


NDJSON = b"".join(orjson.dumps({"resourceType": "Patient", "id": str(i)}) + b"\n" for i in range(2000))


def test_bdx18_dropped_body_restarts_the_file(server: tuple[str, Scripted], tmp_path: Path) -> None:
    base, script = server
    script.actions = [truncated(NDJSON), send(200, NDJSON)]
    sleeps: list[float] = []
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy(sleeps))
    path = bulk.download(f"{base}/bulk/files/j/Patient.ndjson", tmp_path / "p.ndjson", requires_token=True)
    assert path.read_bytes() == NDJSON and len(sleeps) == 1
    assert verify_ndjson_file(path, "Patient", 2000).ok
    assert [p.name for p in tmp_path.iterdir()] == ["p.ndjson"]  # no leftover partial file
    assert script.seen[0][2] == f"Bearer {TOKEN}"


def test_bdx17_gzip_content_encoding_over_the_wire(server: tuple[str, Scripted], tmp_path: Path) -> None:
    base, script = server
    script.actions = [send(200, gzip.compress(NDJSON), {"Content-Encoding": "gzip"})]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    path = bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert path.read_bytes() == NDJSON
    assert script.seen[0][2] is None  # requiresAccessToken=false: no token at all


def test_read_timeouts_become_transport_error_after_retries(server: tuple[str, Scripted]) -> None:
    base, script = server
    script.actions = [slow(0.5), slow(0.5)]
    sleeps: list[float] = []
    client = FhirClient(
        f"{base}/fhir",
        StaticTokenSource(TOKEN),
        retry=recording_policy(sleeps, max_attempts=2),
        timeout=httpx.Timeout(0.1),
    )
    with pytest.raises(TransportError, match="ReadTimeout"):
        client.read("Patient", "p1")
    assert len(script.seen) == 2 and len(sleeps) == 1


def test_connection_reset_is_retried(server: tuple[str, Scripted]) -> None:
    base, script = server
    script.actions = [reset, send(200, orjson.dumps({"resourceType": "Patient", "id": "p1"}))]
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    assert client.read("Patient", "p1")["id"] == "p1"
    assert len(script.seen) == 2


def _outcome(code: str, diagnostics: str | None = None, expression: str | None = None) -> bytes:
    issue: dict[str, Any] = {"severity": "error", "code": code}
    if diagnostics is not None:
        issue["diagnostics"] = diagnostics
    if expression is not None:
        issue["expression"] = [expression]
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})


ANSWERS = [(s, "processing") for s in (400, 404, 408, 409, 422, 429, 500, 501, 502, 503, 504, 505)]


@pytest.mark.parametrize(("status", "code"), [*ANSWERS, (400, "transient"), (409, "lock-error"), (500, "not-found")])
def test_retry_policy_and_is_transient_agree(server: tuple[str, Scripted], status: int, code: str) -> None:
    """One source of truth: an answer is retried exactly when the error it becomes says ``is_transient``."""
    base, script = server
    script.actions = [send(status, _outcome(code), {"Retry-After": "1"}) for _ in range(2)]
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([], max_attempts=2))
    with pytest.raises(FhirError) as info:
        client.read("Patient", "p1")
    retried = len(script.seen) == 2
    assert retried == info.value.is_transient, (status, code, retried)
    assert info.value.is_transient == (status in (408, 429, 500, 502, 503, 504) or code in ("transient", "lock-error"))


def test_operation_outcome_diagnostics_never_reach_the_error_and_its_expression_is_sanitized_and_capped(
    server: tuple[str, Scripted],
) -> None:
    """The error names the issue and the element it is about, never the server's diagnostics (they may quote the
    patient); what it keeps of the server's words carries no control characters and is capped."""
    base, script = server
    noisy = "Patient.birth\x1b[31mDate\r\nInjected: line\u202e" + "x" * 1000
    said = _outcome("invalid", "no patient Jane Doe born 1970-01-01", noisy)
    script.actions = [send(400, said, {"Content-Type": "application/fhir+json"})]
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    with pytest.raises(FhirError) as info:
        client.read("Patient", "p1")
    message = str(info.value)
    assert message.startswith(f"GET {base}/fhir/Patient/p1 answered HTTP 400 (issues: error invalid at Patient.birth")
    assert "[31mDate Injected: line x" in message and len(message) < len(base) + 220, message
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or ch == "\u202e" for ch in message)
    assert "Jane" not in message and "1970" not in message
    assert info.value.operation_outcome is not None  # the whole answer stays on the error, for code to read


def test_gzip_download_inflates_a_bounded_piece_at_a_time(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """A 64 MiB file sent as ~64 KiB of gzip is written whole while Python never holds more than a few MiB of
    it (httpx inflated each received chunk whole: ~64 MB at once, per concurrent download)."""
    base, script = server
    body = line_bomb(64 * 1024 * 1024)
    assert len(body) < 200_000
    script.actions = [send(200, body, {"Content-Encoding": "gzip"})]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    dest = tmp_path / "p.ndjson"
    peak = peak_python_bytes(lambda: bulk.download(f"{base}/files/Patient.ndjson", dest, requires_token=False))
    assert dest.stat().st_size == len(gzip.decompress(body))
    assert peak < 8 * 1024 * 1024, peak


def test_gzip_json_past_the_byte_limit_stops_within_one_piece(server: tuple[str, Scripted]) -> None:
    """The per-response limit is checked between pieces of at most 1 MiB, so a body that would inflate to
    64 MiB fails at the limit having held little more than it."""
    base, script = server
    script.actions = [send(200, line_bomb(64 * 1024 * 1024), {"Content-Encoding": "gzip"})]
    client = FhirClient(
        f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]), bounds=BodyBounds(max_bytes=2_000_000)
    )
    errors: list[Exception] = []

    def read() -> None:
        try:
            client.read("Patient", "same")
        except ResponseTooLargeError as exc:
            errors.append(exc)

    peak = peak_python_bytes(read)
    assert errors and "exceeds the 2000000-byte response limit" in str(errors[0])
    assert peak < 8 * 1024 * 1024, peak


def test_bdx17_gzip_body_without_its_end_marker_lands_whole(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """A server that flushes its gzip stream but never finishes it (no end marker, framing complete): the file
    is kept as far as it decodes, as httpx and browsers do, in one request."""
    base, script = server
    packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    unfinished = packer.compress(NDJSON) + packer.flush(zlib.Z_SYNC_FLUSH)
    script.actions = [send(200, unfinished, {"Content-Encoding": "gzip"})]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    path = bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert path.read_bytes() == NDJSON and len(script.seen) == 1


def test_unsupported_content_encoding_is_refused_by_name(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """``br`` was never asked for (``Accept-Encoding: gzip``): a clear error, not compressed bytes on disk."""
    base, script = server
    script.actions = [send(200, b"\x1b\x00\xf8\xa5", {"Content-Encoding": "br"})]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    with pytest.raises(UnsupportedContentEncodingError, match="Content-Encoding br, which ehrsync cannot decode"):
        bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("coding", [None, "gzip"])
def test_an_endless_error_page_is_read_only_up_to_its_bound(
    server: tuple[str, Scripted], tmp_path: Path, coding: str | None
) -> None:
    """A file download (no byte limit of its own) answered 500 with a 64 MiB page, plain or gzip 1000:1: the
    error is raised with the status, having held about ``ERROR_BODY_BYTES`` (the old code read every byte,
    in the retry loop's ``response.read()``)."""
    base, script = server
    page = b"<html>" + b" " * (64 * 1024 * 1024) + b"</html>"
    body = gzip.compress(page, compresslevel=9) if coding else page
    script.actions = [send(500, body, {"Content-Encoding": coding} if coding else {}) for _ in range(2)]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([], max_attempts=2))
    errors: list[Exception] = []

    def download() -> None:
        try:
            bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
        except BulkExportError as exc:
            errors.append(exc)

    peak = peak_python_bytes(download)
    assert errors and "answered HTTP 500" in str(errors[0]) and len(script.seen) == 2
    assert peak < 2 * ERROR_BODY_BYTES + 4 * 1024 * 1024, peak
