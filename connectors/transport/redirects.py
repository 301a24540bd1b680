"""A 3xx whose ``Location`` httpx cannot parse (``https://h:abc/x``, ``http://[zz]/x``) fails at once, typed.

httpx reads every redirect's Location as it hands the answer back (it builds ``response.next_request`` even when
no redirect is followed) and raises ``httpx.RemoteProtocolError`` for one it cannot parse, which looks like a
broken connection: the retry layer sent the same request again until "failed after 5 attempt(s)", a
``TransportError`` that named neither the status nor the Location. The answer will not change, so
:func:`install_location_check` puts a response hook on the client under the layers that raises a ``FhirError``
naming the 3xx status and the Location before httpx reads it. The hook acts only on requests the layers send
(a context flag), so whatever else the client's owner sends with it behaves as before.

A SMART call (token, discovery, introspection, revocation) follows no redirect: its caller handles a 3xx as any
answer that is not a 2xx (an ``invalid_response``, an unusable discovery document). Within :func:`locations_unread`
the hook drops the Location httpx cannot parse instead, so such a 3xx reaches that caller exactly as one with a
valid Location does; as a FhirError it escaped the vault's refresh with no audit row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

import httpx

from connectors.errors import FhirError
from connectors.http.urls import redact_url, resolve_checked_url

__all__ = ["install_location_check", "layers_sending", "locations_unread", "redirect_target"]

_LAYERS_SENDING: ContextVar[bool] = ContextVar("ehrsync_layers_sending", default=False)
_LOCATIONS_UNREAD: ContextVar[bool] = ContextVar("ehrsync_locations_unread", default=False)
_INSTALL_LOCK = threading.Lock()


@contextmanager
def _flagged(flag: ContextVar[bool]) -> Iterator[None]:
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def layers_sending() -> AbstractContextManager[None]:
    """Marks the sends of the layers: only their answers are checked."""
    return _flagged(_LAYERS_SENDING)


def locations_unread() -> AbstractContextManager[None]:
    """Marks sends whose caller never follows a redirect: a Location httpx cannot parse is dropped, not an error."""
    return _flagged(_LOCATIONS_UNREAD)


def redirect_target(location: str, request: httpx.Request, status: int, refused: str | None = None) -> str:
    """Where a redirect leads. A Location urllib cannot split or that cannot be requested (a bad port, an unclosed
    ``[``; ``refused``: httpx's reason for refusing it) is a FhirError naming it and the 3xx status, never a
    ValueError or httpx error from the next request."""
    where = redact_url(str(request.url))
    what = f"{where} answered HTTP {status} with a Location that"

    def error(message: str) -> FhirError:
        return FhirError(message, status, None, where)

    target = resolve_checked_url(location, str(request.url), what, error)
    if refused is not None:
        raise error(f"{what} cannot be requested ({refused}): {redact_url(target)[:200]!r}")
    return target


def _check_location(response: httpx.Response) -> None:
    """Raise FhirError for a redirect whose Location httpx would refuse, or drop that Location for a caller that
    reads none (see the module docstring)."""
    if not _LAYERS_SENDING.get() or not response.has_redirect_location:
        return
    location = response.headers["Location"]
    try:
        httpx.URL(location)
    except httpx.InvalidURL as exc:
        if _LOCATIONS_UNREAD.get():
            del response.headers["Location"]  # httpx then builds no next request from it
            return
        redirect_target(location, response.request, response.status_code, refused=str(exc))


def install_location_check(http: httpx.Client) -> None:
    """Add the check to ``http``'s response hooks unless it is there (again if the owner replaced its hooks)."""
    hooks = http.event_hooks["response"]
    if _check_location in hooks:
        return
    with _INSTALL_LOCK:
        hooks = http.event_hooks["response"]
        if _check_location not in hooks:
            hooks.append(_check_location)
