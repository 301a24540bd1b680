"""A bound on every request body: ``MAX_REQUEST_BODY_BYTES``, declared or streamed.

FastAPI reads a route's whole body and parses it before any dependency runs, the API key's check included, so
without this any client could make the service read and hold a body of any size (a multi-GB JSON). No route
takes more than a brands bundle (16 MiB, whose route names its own limit past it) or a PDF note (5,000,000 bytes,
6.7 MB of base64, whose service names the vendor's limit or ehrsync's past it); the bound leaves room above both
so those answers still speak. Past it: 413 ``request_too_large``, nothing read further.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_service.services.notes import MAX_PDF_BYTES
from connectors.smart.brands import MAX_BUNDLE_BYTES

__all__ = ["MAX_REQUEST_BODY_BYTES", "BodyLimit"]

#: The most of a request body the service reads (twice the largest body a route takes, a brands bundle).
MAX_REQUEST_BODY_BYTES = 2 * MAX_BUNDLE_BYTES


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _too_large(max_bytes: int) -> HTTPException:
    """Raised from ``receive``: FastAPI passes an HTTPException on from its body read (``on_http`` answers it)."""
    return HTTPException(
        413,
        f"the request body is over {max_bytes} bytes, the most this service reads; nothing past it was read (a PDF "
        f"note is at most {MAX_PDF_BYTES} bytes decoded, a brands bundle {MAX_BUNDLE_BYTES})",
    )


class BodyLimit:
    """ASGI middleware: ``receive`` refuses a body declared over the bound before reading any of it, and one with no
    declared length (chunked) as soon as what came passes the bound."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        received = 0

        async def bounded() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise _too_large(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, bounded, send)
