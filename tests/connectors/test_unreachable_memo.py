"""The unreachable-origin memo (issue 10): only a refused connection or a failed DNS lookup marks an origin
unreachable; a connect timeout or a TLS failure goes back to the normal retries with backoff; any HTTP answer
from the origin clears its memo, so an EHR that comes back is used at once, not after the memo's 60 s."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from connectors.budgets import forget_unreachable, unreachable_reason
from connectors.errors import EhrUnreachableError, TransportError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.transport.retrying import UNREACHABLE_RETRY_S
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import QuietServer


class _Patient(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"resourceType": "Patient", "id": "p1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port that accepts no connection in time: the listen backlog is full, so a connect times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers: list[socket.socket] = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()
        forget_unreachable(f"http://127.0.0.1:{port}")


def _serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Patient)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_connect_timeout_is_retried_with_backoff_not_remembered(full_backlog: int) -> None:
    origin = f"http://127.0.0.1:{full_backlog}"
    sleeps: list[float] = []
    policy = recording_policy(sleeps, max_attempts=3)
    client = FhirClient(f"{origin}/fhir", StaticTokenSource("t"), retry=policy, timeout=httpx.Timeout(5, connect=0.2))
    with pytest.raises(TransportError, match="ConnectTimeout") as info:
        client.read("Patient", "p1")
    assert not isinstance(info.value, EhrUnreachableError)
    assert len(sleeps) == 2 and UNREACHABLE_RETRY_S not in sleeps  # the normal backoff, every attempt
    assert unreachable_reason(origin) is None  # a slow host is not an unreachable one


def test_tls_failure_is_not_remembered_as_unreachable() -> None:
    port = _free_port()
    server = _serve(port)  # plain HTTP: a TLS handshake with it fails
    origin = f"https://127.0.0.1:{port}"
    try:
        sleeps: list[float] = []
        client = FhirClient(f"{origin}/fhir", StaticTokenSource("t"), retry=recording_policy(sleeps, max_attempts=2))
        with pytest.raises(TransportError) as info:
            client.read("Patient", "p1")
        assert not isinstance(info.value, EhrUnreachableError)
        assert unreachable_reason(origin) is None
    finally:
        server.shutdown()
        server.server_close()
        forget_unreachable(origin)


def test_an_ehr_that_comes_back_is_used_at_once_within_the_memo_window() -> None:
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    client = FhirClient(f"{origin}/fhir", StaticTokenSource("t"), retry=recording_policy([]))
    server: ThreadingHTTPServer | None = None
    try:
        with pytest.raises(EhrUnreachableError):
            client.read("Patient", "p1")
        assert unreachable_reason(origin) is not None
        with pytest.raises(EhrUnreachableError, match="remembered"):  # still down: fails at once
            client.read("Patient", "p1")
        server = _serve(port)
        started = time.monotonic()
        assert client.read("Patient", "p1")["id"] == "p1"  # well inside the 60 s memo
        assert time.monotonic() - started < 5
        assert unreachable_reason(origin) is None  # the answer cleared the memo for every later request
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        forget_unreachable(origin)


class _StoresThenGoesDown(BaseHTTPRequestHandler):
    """A create the EHR takes, then it goes down before answering: the server stops listening, the connection
    closes unanswered, and a retry's connection is refused."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.shutdown()  # a handler thread of its own (ThreadingHTTPServer): serve_forever ends
        self.server.server_close()  # nothing listens on the port any more
        self.close_connection = True  # and this request is left unanswered

    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_create_whose_retry_finds_the_ehr_gone_says_its_first_try_may_be_stored() -> None:
    """DWB-34: a conditional create (retried by the transport) sent, its answer lost, then its retry refused: the
    error is EhrUnreachableError (this try reached nothing), and it says an earlier try may have been processed
    (``after_lost_answer``): before, nothing did, and the write-back took "unreachable" as "nothing sent"."""
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    server = QuietServer(("127.0.0.1", port), _StoresThenGoesDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = FhirClient(f"{origin}/fhir", StaticTokenSource("t"), retry=recording_policy([]))
    note = {"resourceType": "DocumentReference", "status": "current"}
    try:
        with pytest.raises(EhrUnreachableError) as info:
            client.create(note, if_none_exist="identifier=urn:x|1")
        assert info.value.after_lost_answer
        forget_unreachable(origin)
        with pytest.raises(EhrUnreachableError) as never_sent:  # refused from the first try: nothing may be stored
            client.create(note, if_none_exist="identifier=urn:x|1")
        assert not never_sent.value.after_lost_answer
    finally:
        forget_unreachable(origin)
