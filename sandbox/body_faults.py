"""Faults in the body of an answer: a server trickling bytes, and one sending far more than any page should.

Both stop as soon as the client hangs up (uvicorn silently drops sends after a disconnect, so the fault
watches ``receive`` for ``http.disconnect``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.asgi_capture import captured_answer

HUGE_BODY_BYTES = 256 * 1024 * 1024
_CHUNK = 64 * 1024


async def body_fault(
    kind: str,
    pace: tuple[float, int],
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    status: int = 200,
) -> None:
    """``trickle``: the app's own answer, its body ``pace`` = (``delay_s``, ``chunk_bytes``): that many bytes every
    ``delay_s``; ``huge_body``: an endless Bundle answered with ``status`` (a 3xx without a Location: an answer no
    client follows, whose body is all it says)."""
    if kind == "huge_body":
        await _while_connected(receive, _huge(send, status))
        return
    start, body = await captured_answer(app, scope, receive)
    if start is not None:
        await _while_connected(receive, _trickle(send, start, body, *pace))


async def _while_connected(receive: Receive, sending: Coroutine[Any, Any, None]) -> None:
    """Run the ``sending`` coroutine until it ends or the client disconnects, whichever comes first."""

    async def hang_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sender = asyncio.ensure_future(sending)
    watcher = asyncio.ensure_future(hang_up())
    await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sender, watcher):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _trickle(send: Send, start: Message, body: bytes, delay_s: float, chunk_bytes: int) -> None:
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    await send({**start, "headers": headers})
    for i in range(0, len(body), chunk_bytes):
        await send({"type": "http.response.body", "body": body[i : i + chunk_bytes], "more_body": True})
        await asyncio.sleep(delay_s)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _huge(send: Send, status: int) -> None:
    headers = [(b"content-type", b"application/fhir+json")]  # no Content-Length: the client must count
    await send({"type": "http.response.start", "status": status, "headers": headers})
    opening = b'{"resourceType":"Bundle","type":"searchset","entry":['
    await send({"type": "http.response.body", "body": opening, "more_body": True})
    item = b'{"resource":{"resourceType":"Observation","id":"x","status":"final"}},'
    chunk = item * (_CHUNK // len(item))
    sent = 0
    while sent < HUGE_BODY_BYTES:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"{}]}", "more_body": False})
