"""``return_to``: the host app page the patient goes back to, only ever on an origin the tenant allowed.

No open redirect: the URL must be absolute http(s), without user info or control characters, and its origin
(scheme, host, port; default ports dropped, case folded) must equal one of the tenant's
``allowedReturnOrigins`` exactly. Plain http is allowed only for loopback hosts (development).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["ReturnToError", "check_return_to", "normalize_origin"]

_DEFAULT_PORTS = {"https": 443, "http": 80}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ReturnToError(ValueError):
    """``return_to`` is not a URL on one of the tenant's allowed return origins (the message says why)."""


def normalize_origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute http(s) URL; raises ``ReturnToError`` for anything else."""
    if not url or len(url) > 2000 or any(ord(c) < 0x21 or c in "\\\x7f" for c in url):
        raise ReturnToError("return_to must be an absolute URL without spaces, backslashes or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ReturnToError("return_to is not a valid URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host:
        raise ReturnToError("return_to must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise ReturnToError("return_to must not carry user information")
    if scheme == "http" and host not in _LOOPBACK:
        raise ReturnToError("return_to must use https (plain http only for localhost)")
    shown_host = f"[{host}]" if ":" in host else host
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{shown_host}{suffix}"


def check_return_to(url: str, allowed_origins: Iterable[str]) -> str:
    """``url`` itself when its origin is allowed, else ``ReturnToError``."""
    origin = normalize_origin(url)
    allowed = set()
    for item in allowed_origins:
        try:
            allowed.add(normalize_origin(item))
        except ReturnToError:
            continue
    if origin not in allowed:
        raise ReturnToError("return_to is not on one of this practice's allowed return origins")
    return url
