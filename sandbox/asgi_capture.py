"""The app's whole answer held back from the client, for faults that send it otherwise (paced, cut short)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope

__all__ = ["captured_answer"]


async def captured_answer(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message | None, bytes]:
    """Run ``app`` for the request and return its ``http.response.start`` message (None if it sent none) and its
    body, without sending either."""
    start: Message | None = None
    body = bytearray()

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, capture)
    return start, bytes(body)
