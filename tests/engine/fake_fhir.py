"""A tiny scripted FHIR server on 127.0.0.1:0 for protocol edges the sandbox does not produce on demand:
``next`` links on another path that expire once (BDX-29), no ``Bundle.meta.lastUpdated`` (``Date`` fallback,
BDX-27), attachments of every outcome (too large, forbidden type, relative and absolute URLs)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

Reply = tuple[int, dict[str, str], bytes]
Route = Callable[[str, dict[str, list[str]]], Reply]


@dataclass
class FakeFhir:
    """Routes by path; every request (path, query) is recorded."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    authorized: list[bool] = field(default_factory=list)
    base_url: str = ""

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    def hits(self, path: str, method: str = "GET") -> int:
        return sum(1 for (p, _), m in zip(self.requests, self.methods, strict=True) if p == path and m == method)

    def query_of(self, path: str) -> list[dict[str, list[str]]]:
        return [q for p, q in self.requests if p == path]


def bundle(resources: list[dict[str, Any]], *, next_url: str | None = None, last_updated: str | None = None) -> Reply:
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if last_updated:
        body["meta"] = {"lastUpdated": last_updated}
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    body["entry"] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def document_with(attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """DocumentReference ``d1`` of ``Patient/p1`` whose content holds ``attachments``."""
    return {
        "resourceType": "DocumentReference",
        "id": "d1",
        "meta": {"lastUpdated": "2026-10-01T00:00:00Z"},
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": a} for a in attachments],
    }


def outcome(status: int, code: str) -> Reply:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}
    return status, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def group_export(files: list[str], file_reply: Callable[[str], Reply], transaction_time: str) -> FakeFhir:
    """A server whose Group ``g1`` export lists one Patient file per name in ``files`` (manifest ``count`` 1 each),
    each answered by ``file_reply(name)``; kick-off, status and its DELETE at ``/bulk/status/j``."""
    fake = FakeFhir()

    def status(_p: str, _q: dict[str, list[str]]) -> Reply:
        items = [{"type": "Patient", "url": f"{fake.base_url}/bulk/files/{n}.ndjson", "count": 1} for n in files]
        manifest = {"transactionTime": transaction_time, "request": f"{fake.fhir_base}/Group/g1/$export"}
        body = {**manifest, "requiresAccessToken": True, "output": items, "error": []}
        return 200, {"Content-Type": "application/json"}, orjson.dumps(body)

    fake.routes.update(
        {
            "/fhir/Group/g1/$export": lambda _p, _q: (202, {"Content-Location": f"{fake.base_url}/bulk/status/j"}, b""),
            "GET /bulk/status/j": status,
            "DELETE /bulk/status/j": lambda _p, _q: (202, {}, b""),
            **{f"/bulk/files/{n}.ndjson": (lambda _p, _q, n=n: file_reply(n)) for n in files},
        }
    )
    return fake


@contextmanager
def serve(fake: FakeFhir, date_header: str = "Wed, 21 Oct 2026 07:28:00 GMT") -> Iterator[FakeFhir]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            fake.requests.append((parts.path, query))
            fake.methods.append(self.command)
            fake.authorized.append(self.headers.get("Authorization") is not None)
            route = fake.routes.get(f"{self.command} {parts.path}") or fake.routes.get(parts.path)
            status, headers, body = route(parts.path, query) if route else outcome(404, "not-found")
            self.send_response(status)  # adds Date via date_time_string below
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (what some tests check)
                self.close_connection = True

        def date_time_string(self, timestamp: float | None = None) -> str:
            return date_header

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
