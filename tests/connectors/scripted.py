"""A tiny scripted HTTP server on 127.0.0.1:0 that plays the EHR for faults only a real socket can show, and
helpers for bodies that inflate far past their size on the wire."""

from __future__ import annotations

import contextlib
import gzip
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

__all__ = [
    "Action",
    "QuietServer",
    "Scripted",
    "headers_a_byte_at_a_time",
    "line_bomb",
    "peak_python_bytes",
    "scripted_server",
    "send",
]

Action = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.seen: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def next(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.seen.append((handler.command, handler.path, handler.headers.get("Authorization")))
            action = self.actions.pop(0)
        action(handler)


class QuietServer(ThreadingHTTPServer):
    """Clients hanging up on purpose (timeouts) are the point of these tests, not errors to print."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def scripted_server() -> Iterator[tuple[str, Scripted]]:
    """A server answering each GET or POST with the next of its ``actions`` (the ``server`` fixture)."""
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            script.next(self)

        def do_POST(self) -> None:  # token endpoints; the form body is read so the client is never blocked
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.next(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def send(status: int, body: bytes, headers: dict[str, str] | None = None) -> Action:
    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    return act


def headers_a_byte_at_a_time(body: bytes, delay_s: float, content_type: str = "application/json") -> Action:
    """200 whose status line and headers (padded to ~250 bytes) arrive a byte every ``delay_s``, then ``body``."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\nX-Pad: " + b"a" * 200

    def act(h: BaseHTTPRequestHandler) -> None:
        try:
            for byte in head:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(delay_s)
            h.wfile.write(b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:  # the client hung up at its deadline: the point
            h.close_connection = True

    return act


def line_bomb(decoded_bytes: int) -> bytes:
    """A gzip body of one resource repeated: ~1000:1, so one 64 KiB read inflates to tens of MB at once."""
    line = orjson.dumps({"resourceType": "Patient", "id": "same"}) + b"\n"
    return gzip.compress(line * (decoded_bytes // len(line)), compresslevel=9)


def peak_python_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
