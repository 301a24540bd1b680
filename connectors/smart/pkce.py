"""PKCE (RFC 7636) with S256 only (SAL-03, SAL-11)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

__all__ = ["PkcePair", "code_challenge_for", "new_pkce"]

_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}\Z")


@dataclass(frozen=True)
class PkcePair:
    """A verifier (kept server-side, encrypted) and its S256 challenge (sent on the authorize URL)."""

    verifier: str
    challenge: str
    method: str = "S256"

    def __repr__(self) -> str:  # the verifier is a secret: keep it out of logs and tracebacks
        return f"PkcePair(challenge={self.challenge!r}, method={self.method!r})"


def code_challenge_for(verifier: str) -> str:
    """base64url(SHA-256(verifier)) without padding; rejects verifiers RFC 7636 forbids."""
    if not _VERIFIER_RE.match(verifier):
        raise ValueError("PKCE verifier must be 43-128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce(length: int = 64) -> PkcePair:
    """A fresh pair from the OS CSPRNG; ``length`` is the verifier length (43-128)."""
    if not 43 <= length <= 128:
        raise ValueError("PKCE verifier length must be between 43 and 128")
    verifier = secrets.token_urlsafe(length)[:length]
    return PkcePair(verifier=verifier, challenge=code_challenge_for(verifier))
