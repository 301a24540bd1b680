"""A server trickling its status line and headers, or stalling its body, is cut off at the request deadline
(issue 14: "bound what any server can make you spend"; real servers trickle bytes). httpx's timeouts are per read,
so before, a header sent a byte every 0.3 s kept a request with a 2 s deadline open for 30 s, and one a byte per
(read timeout - epsilon) for as long as the server liked; the body was already checked between chunks, the headers
were not. The sandbox is an ASGI app, which cannot send headers a byte at a time: a scripted socket server plays
these servers (``tests/connectors/scripted.py``)."""

from __future__ import annotations

import contextlib
import time
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from connectors.errors import RequestDeadlineError
from connectors.fhir import FhirClient
from connectors.smart import SecretClientAuth, refresh_grant
from connectors.transport import BodyBounds, BoundedClient
from connectors.transport.network import keeps_deadline
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Action, Scripted, headers_a_byte_at_a_time, send

_BODY = b'{"resourceType":"Patient","id":"p1"}'


def _headers_a_byte_at_a_time(delay_s: float) -> Action:
    return headers_a_byte_at_a_time(_BODY, delay_s)


@pytest.mark.parametrize("own_client", [False, True], ids=["client-built", "bounded-client"])
def test_a_fhir_read_whose_headers_trickle_ends_each_attempt_at_the_deadline(
    server: tuple[str, Scripted], own_client: bool
) -> None:
    """Through the client FhirClient builds and through a BoundedClient (the Dagster resource's): each attempt ends
    about 1 s in, as a server that sends no headers at all would (a timeout the plan retries: each attempt has its
    own deadline, ``test_http_bounds``), so the read fails after its attempts, never later."""
    base, script = server
    script.actions = [_headers_a_byte_at_a_time(0.05) for _ in range(3)]
    http = BoundedClient(bounds=None, timeout=30) if own_client else None
    policy = recording_policy([], max_attempts=3)
    client = FhirClient(f"{base}/fhir", None, http=http, retry=policy, bounds=BodyBounds(None, 1.0))
    started = time.monotonic()
    deadline = r"GET .*/fhir/Patient/p1 got no complete answer within 1 s \(EHRSYNC_REQUEST_DEADLINE_S\) on 3 attempt"
    with pytest.raises(RequestDeadlineError, match=deadline):
        client.read("Patient", "p1")
    assert time.monotonic() - started < 3 * 1.0 + 6  # the trickled headers: 12.5 s an attempt
    assert len(script.seen) == 3
    if http is not None:
        http.close()


def test_a_token_endpoint_whose_headers_trickle_ends_at_the_deadline(server: tuple[str, Scripted]) -> None:
    """The vault's client (a BoundedClient): the refresh fails with the deadline, named as such, in ~1 s (the
    vault does not retry it, ``store/_grants.py``)."""
    base, script = server
    script.actions = [_headers_a_byte_at_a_time(0.05)]
    started = time.monotonic()
    deadline = pytest.raises(RequestDeadlineError, match="got no complete answer within 1 s")
    with BoundedClient(bounds=BodyBounds(None, 1.0), timeout=30) as http, deadline:
        refresh_grant(f"{base}/token", http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="o")
    assert time.monotonic() - started < 6  # the trickled headers: 12.5 s


def test_a_callers_own_client_keeps_its_transport(server: tuple[str, Scripted]) -> None:
    """A library caller's plain ``httpx.Client`` is not rebuilt: its headers are bounded by its read timeout per
    byte only (documented in connectors/transport/network.py); the answer, once complete, is read."""
    base, script = server
    script.actions = [_headers_a_byte_at_a_time(0.002)]
    with httpx.Client(timeout=30) as http:
        client = FhirClient(f"{base}/fhir", None, http=http, retry=recording_policy([]), bounds=BodyBounds(None, 60))
        assert client.read("Patient", "p1")["id"] == "p1"


def test_a_token_answer_whose_body_stalls_ends_at_the_deadline(server: tuple[str, Scripted]) -> None:
    """Headers at once, then half the body and silence (30 s, then the server hangs up): the read, cut to what is
    left of the deadline, runs out and that is the deadline, named as a body still arriving at it is (not a timeout
    the vault would try three times while holding the refresh lock)."""
    base, script = server

    def stall(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"access_token":"at","token_type":"Bearer"}'
        handler.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        handler.wfile.write(body[:10])
        handler.wfile.flush()
        time.sleep(30)

    script.actions = [stall]
    started = time.monotonic()
    deadline = pytest.raises(RequestDeadlineError, match=r"still sending after 1 s \(10 bytes received; EHRSYNC_REQ")
    with BoundedClient(bounds=BodyBounds(None, 1.0), timeout=30) as http, deadline:
        refresh_grant(f"{base}/token", http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="o")
    assert time.monotonic() - started < 6


@pytest.fixture
def proxied_by(server: tuple[str, Scripted], monkeypatch: pytest.MonkeyPatch) -> Scripted:
    """The scripted server as the environment's HTTP proxy (it sees the absolute URL of each request); the
    autouse fixture of ``tests/fixtures/http.py`` has cleared every other proxy variable."""
    base, script = server
    monkeypatch.setenv("HTTP_PROXY", base)
    return script


@pytest.mark.parametrize("own_client", [False, True], ids=["client-built", "bounded-client"])
def test_clients_ehrsync_builds_go_through_the_environments_proxy_with_the_deadline(
    proxied_by: Scripted, own_client: bool
) -> None:
    """``HTTP_PROXY`` is honoured as a plain ``httpx.Client`` honours it (a site that needs a proxy to reach its
    EHR), and the proxy's connections keep the deadline down to the headers too."""
    proxied_by.actions = [send(200, b'{"resourceType":"Patient","id":"p1"}'), _headers_a_byte_at_a_time(0.05)]
    # 3 s, not 1: the first read has it too, and a busy CI machine may answer that in over a second
    with contextlib.ExitStack() as closing:
        http = closing.enter_context(BoundedClient(bounds=None, timeout=30)) if own_client else None
        policy = recording_policy([], max_attempts=1)
        bounds = BodyBounds(None, 3.0)
        client = FhirClient("http://ehr.invalid/fhir", None, http=http, retry=policy, bounds=bounds, allow_http=True)
        closing.callback(client.close)
        assert client.read("Patient", "p1")["id"] == "p1"
        started = time.monotonic()
        with pytest.raises(RequestDeadlineError, match="got no complete answer within 3 s"):
            client.read("Patient", "p2")
        assert time.monotonic() - started < 9  # the trickled headers: 12.5 s
    assert [path for _, path, _ in proxied_by.seen] == [
        "http://ehr.invalid/fhir/Patient/p1",
        "http://ehr.invalid/fhir/Patient/p2",
    ]


def test_every_transport_a_bounded_client_builds_keeps_the_deadline() -> None:
    """Its own transport and a proxy's (``proxy=``) are built by ``deadline_transport``; a transport the caller
    passes is kept as given. Were httpx to rename the hooks BoundedClient overrides, building one would fail."""
    with BoundedClient(bounds=None, proxy="http://127.0.0.1:9") as proxied:
        assert keeps_deadline(proxied._transport)
        assert proxied._mounts and all(t is not None and keeps_deadline(t) for t in proxied._mounts.values())
    given = httpx.HTTPTransport()
    with BoundedClient(bounds=None, transport=given) as client:
        assert client._transport is given and not keeps_deadline(given)
