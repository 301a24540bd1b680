"""Dropping a connection without an answer (the ``drop`` and ``drop_response`` faults of :mod:`sandbox.faults`)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Send

__all__ = ["drop"]


def _find_transport(send: Any, depth: int = 0) -> Any:
    """uvicorn's transport behind ``send``: its bound method, possibly wrapped in Starlette closures."""
    if depth > 6 or send is None:
        return None
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        return transport
    for cell in getattr(send, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # empty cell
            continue
        if callable(inner):
            found = _find_transport(inner, depth + 1)
            if found is not None:
                return found
    return None


async def drop(send: Send) -> None:
    """Close the TCP connection without any response bytes.

    uvicorn answers 500 when an app fails before responding, so we reach its transport (through the bound
    ``send`` of its request cycle, unwrapping Starlette's closures) and abort it; if that is not available
    (another server), we start a response and abort it, which clients also see as a dropped connection.
    """
    transport = _find_transport(send)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        await asyncio.sleep(0.01)  # let uvicorn see the disconnect, so it does not try to answer
        return
    start: Message = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
    await send(start)
    raise ConnectionAbortedError("simulated dropped connection")
