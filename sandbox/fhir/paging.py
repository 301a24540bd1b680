"""Opaque, signed, expiring ``next`` links (BDX-29, BDX-33): the client cannot build or edit them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from sandbox.fhir.responses import FhirFailure


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()[:18])
    return (body + b"." + mac).decode()


def unsign(secret: bytes, token: str, now: float) -> dict[str, Any]:
    """The payload of a page token; 404 when forged or garbled, 410 when expired."""
    body, _, mac = token.encode().partition(b".")
    good = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()[:18])
    if not hmac.compare_digest(mac, good):
        raise FhirFailure(404, "not-found", "unknown paging link")
    payload: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    if float(payload.get("exp", 0)) < now:
        raise FhirFailure(410, "expired", "paging link expired: restart the search")
    return payload
