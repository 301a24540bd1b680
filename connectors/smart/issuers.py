"""Issuer allow-listing (SAL-06, SAL-41): checked before any network call to a launch ``iss``."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from connectors.errors import SecurityPolicyError
from connectors.http.urls import url_problem

__all__ = ["is_issuer_allowed", "normalize_issuer", "require_issuer_allowed"]


def normalize_issuer(iss: str) -> str:
    """Lower-case scheme and host only; path, port, query and trailing slash stay exactly as given. A value urllib
    cannot split (an unclosed ``[``) is only stripped: it matches no allow-list entry and no stored issuer."""
    try:
        parts = urlsplit(iss.strip())
    except ValueError:
        return iss.strip()
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo}@{hostport.lower()}"
    else:
        netloc = netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))


def is_issuer_allowed(iss: str, allowlist: Iterable[str]) -> bool:
    """Exact match after normalising only scheme/host case; a non-http(s), hostless or malformed ``iss`` (a bad
    port, an unclosed ``[``) never matches."""
    if not isinstance(iss, str) or url_problem(iss.strip()) is not None:
        return False
    wanted = normalize_issuer(iss)
    return any(normalize_issuer(allowed) == wanted for allowed in allowlist if allowed)


def require_issuer_allowed(iss: str, allowlist: Iterable[str]) -> str:
    """Return ``iss`` when allow-listed, else raise ``SecurityPolicyError`` (message carries no secrets)."""
    if not is_issuer_allowed(iss, allowlist):
        raise SecurityPolicyError(f"issuer {iss!r} is not on this tenant's allow-list")
    return iss
