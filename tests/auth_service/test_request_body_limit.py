"""Every request body is bounded (``auth_service.api.body_limit``), over a real socket (uvicorn).

FastAPI reads and parses a route's JSON body before its dependencies run, so the API key is checked only after the
whole body was held in memory: a client with no key at all could make the service read and parse a body of any
size. ``pdfBase64`` has no length cap of its own (the service names the vendor's limit for a PDF over ehrsync's), and
a pydantic cap never bounded that read anyway. Now a body declared or streamed past ``MAX_REQUEST_BODY_BYTES`` is
413 ``request_too_large`` once it passes the bound, nothing read past it.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from auth_service.api.body_limit import MAX_REQUEST_BODY_BYTES
from auth_service.app import create_app
from connectors.smart.brands import MAX_BUNDLE_BYTES
from tests.auth_service.conftest import LiveServer

PATH = "/api/ehr/notes"
CHUNK = 1024 * 1024


@pytest.fixture
def server(make_settings: Callable[..., Any]) -> Iterator[LiveServer]:
    def factory(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url))

    with LiveServer(factory) as live:
        yield live


def _answer(conn: http.client.HTTPConnection) -> tuple[int, dict[str, Any]]:
    # a service that still reads the body never answers: the socket's timeout fails the test
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _too_large(status: int, body: dict[str, Any]) -> None:
    assert status == 413, (status, body)
    assert body["error"] == "request_too_large", body
    assert f"{MAX_REQUEST_BODY_BYTES} bytes" in body["message"], body


def test_a_body_declared_over_the_bound_is_refused_before_any_of_it_is_read(server: LiveServer) -> None:
    """2 GiB declared, no API key, nothing of it sent: answered at once, unauthenticated or not."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest("POST", PATH)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(2 * 1024**3))
        conn.endheaders()
        _too_large(*_answer(conn))
    finally:
        conn.close()


def test_a_chunked_body_is_refused_once_past_the_bound(server: LiveServer) -> None:
    """A body with no declared length (chunked) is counted as it comes: one byte past the bound ends it, the rest
    (here never sent) is not waited for."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest("POST", PATH)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sent = 0
        while sent <= MAX_REQUEST_BODY_BYTES:
            size = min(CHUNK, MAX_REQUEST_BODY_BYTES + 1 - sent)
            conn.send(b"%x\r\n" % size + b" " * size + b"\r\n")
            sent += size
        _too_large(*_answer(conn))
    finally:
        conn.close()


def test_the_bound_is_above_every_body_ehrsync_takes() -> None:
    """The largest: a brands bundle (its route names its own limit past it) and a PDF note past ehrsync's 5,000,000
    bytes (base64: 4 characters per 3 bytes), which is still told the vendor's limit or ehrsync's by name."""
    assert MAX_REQUEST_BODY_BYTES > MAX_BUNDLE_BYTES + CHUNK
    assert MAX_REQUEST_BODY_BYTES > 2 * 5_000_000 * 4 // 3


def test_the_deploy_docs_proxy_passes_every_body_the_service_takes() -> None:
    """nginx refuses a body over 1 MiB by default (``client_max_body_size 1m``, its own HTML 413): docs/DEPLOY.md's
    example without it refused every PDF note over about 785 KB and every brands bundle over 1 MiB before they
    reached the service. Its limit is the service's, so the service's own answers (named limits, JSON) are seen."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    sizes = re.findall(r"client_max_body_size\s+(\d+)m;", text)
    assert sizes and all(int(s) * 1024 * 1024 == MAX_REQUEST_BODY_BYTES for s in sizes), sizes
