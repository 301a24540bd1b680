"""Answers a proxy or gateway in front of an EHR gives in its place, with a success status (the ``proxy_page`` and
``body_cut`` faults of :mod:`sandbox.faults`), and the ``bom`` fault's answers.

Load balancers and single-sign-on gateways serve their own HTML page (a maintenance notice, a login wall, a "bad
gateway" page) with status 200; a proxy that lost the upstream mid-answer may pass on a cut body whose
Content-Length it rewrote. Either way the client gets a 200 it cannot read, although the EHR behind said nothing of
the kind.

A .NET-based FHIR server or gateway writes JSON with a UTF-8 byte order mark first (``bom``): RFC 8259 §8.1 says
implementations must not add one but may ignore one when parsing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.asgi_capture import captured_answer

__all__ = ["PROXY_PAGE", "UTF8_BOM", "gateway_answer"]

#: ``proxy_page``'s body: what a gateway's maintenance or error page looks like.
PROXY_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Temporarily Unavailable</title></head><body>"
    b"<h1>Please try again later</h1><p>The gateway could not reach the application.</p></body></html>"
)
UTF8_BOM = b"\xef\xbb\xbf"


async def gateway_answer(kind: str, status: int, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """``proxy_page``: :data:`PROXY_PAGE` as ``text/html`` with ``status``, the app never asked; ``body_cut``: the
    app's own answer (status and headers), its body cut to its first half with a Content-Length to match; ``bom``:
    the app's own answer, :data:`UTF8_BOM` then its whole body (an empty body stays empty)."""
    if kind == "proxy_page":
        await _send(send, status, [(b"content-type", b"text/html; charset=utf-8")], PROXY_PAGE)
        return
    start, body = await captured_answer(app, scope, receive)
    if start is None:
        return
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-encoding")]
    if kind == "bom":
        await _send(send, int(start["status"]), headers, UTF8_BOM + body if body else body)
        return
    await _send(send, int(start["status"]), headers, body[: len(body) // 2])


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
