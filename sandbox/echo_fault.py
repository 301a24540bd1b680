"""The ``echo`` fault: an error answer that repeats the request, as real servers' error pages do.

A proxy's 400 page shows the request line and its headers (the ``Authorization`` among them); an application
server's 500 page prints the query string (``patient=``, a pre-signed URL's signature); a token endpoint's
``invalid_grant`` says which refresh token or code it refused; an OperationOutcome's diagnostics name the patient
the request was about and quote the text it refused. A client must never log or keep such an answer as it came.

``echo_as`` picks the shape: ``html`` (a ``text/html`` error page), ``outcome`` (an OperationOutcome, the echo in
its diagnostics, ``error`` its issue code) or an OAuth error body: ``oauth`` (RFC 6749's, ``error`` its code, the echo
its ``error_description``), or one a careless server sends, where the echo is the ``error`` itself
(``oauth_error``), the query of its ``error_uri`` (``oauth_uri``) or the one item of an ``error_description`` that
is a JSON array, not a string (``oauth_list``); ``outcome_deep`` is ``outcome`` with an ``extension`` nested
``DEEP_LEVELS`` arrays deep (as deep as a JSON parser such as orjson reads, far past Python's recursion limit).
The echo holds the method, path and query, every request header, the body as sent, the text of any base64
attachment in it, and the names of the patients it refers to (``patient=``/``subject=`` values, ``Patient/<id>``
references in the body), and ``said`` (the fault's ``error_description``: what the server adds of its own, e.g. the
name of the patient a system-level request never named) right after the request line.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import orjson
from starlette.types import Receive, Scope, Send

from sandbox.errors import SandboxError

__all__ = ["DEEP_LEVELS", "echo_answer"]

#: ``outcome_deep``: arrays nested in its ``extension`` (orjson reads 1,024 levels; Python recurses about 1,000 deep)
DEEP_LEVELS = 1000

_PATIENT_REF = re.compile(r"Patient/([A-Za-z0-9\-.]{1,64})")
_ATTACHMENT = re.compile(rb'"data"\s*:\s*"([A-Za-z0-9+/=]+)"')


async def echo_answer(
    scope: Scope, receive: Receive, send: Send, *, status: int, shape: str, code: str, said: str | None = None
) -> None:
    """Answer ``status`` in ``shape`` (``html``, ``outcome``, ``oauth``), repeating the request (and ``said``)."""
    body = await _read_body(receive)
    text = _echo(scope, body, said)
    if shape == "html":
        page = f"<html><head><title>{status} Error</title></head><body><h1>{status} Error</h1><pre>"
        payload, kind = (page + html.escape(text) + "</pre></body></html>").encode(), b"text/html; charset=utf-8"
    elif shape.startswith("oauth"):
        payload, kind = orjson.dumps(_oauth_body(shape, code, text)), b"application/json"
    else:
        issue = {"severity": "error", "code": code, "diagnostics": text}
        payload = orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})
        if shape == "outcome_deep":  # written by hand: orjson writes only 254 levels
            payload = payload[:-1] + b',"extension":' + b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS + b"}"
        kind = b"application/fhir+json"
    headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _oauth_body(shape: str, code: str, text: str) -> dict[str, Any]:
    if shape == "oauth_error":
        return {"error": text}
    if shape == "oauth_uri":
        return {"error": code, "error_uri": f"https://ehr.example/oauth-errors?request={quote(text, safe='')}"}
    return {"error": code, "error_description": [text] if shape == "oauth_list" else text}


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _echo(scope: Scope, body: bytes, said: str | None) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    # The request's own values first (a server saying what it refused), then the headers: an answer cut short
    # still repeats the secrets.
    lines = [f"{scope.get('method', '')} {scope.get('path', '')}{'?' + unquote(query) if query else ''}"]
    lines += [said] if said else []
    lines += [f"patient: {n}" for n in _patient_names(scope, query, body)]
    lines += [f"attachment text: {t}" for t in _attachment_texts(body)]
    headers = dict(scope.get("headers") or [])
    if b"authorization" in headers:
        lines.append(f"authorization: {headers[b'authorization'].decode('latin-1')}")
    if body:
        lines.append(unquote(body.decode("utf-8", "replace").replace("+", " ")))
    lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in headers.items() if k != b"authorization"]
    return "\n".join(lines)


def _attachment_texts(body: bytes) -> list[str]:
    texts = []
    for data in _ATTACHMENT.findall(body):
        try:
            texts.append(base64.b64decode(data, validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            continue
    return texts


def _patient_names(scope: Scope, query: str, body: bytes) -> list[str]:
    ids = [v.removeprefix("Patient/") for k, v in parse_qsl(query) if k in ("patient", "subject", "_id")]
    ids += _PATIENT_REF.findall(body.decode("utf-8", "replace"))
    app = scope.get("app")
    store = getattr(getattr(getattr(app, "state", None), "sandbox", None), "store", None)
    names = []
    for pid in dict.fromkeys(ids):
        try:
            patient: Any = store.read("Patient", pid) if store is not None else None
        except SandboxError:  # an id the store does not know (or deleted) is echoed without a name
            patient = None
        for name in (patient or {}).get("name") or []:
            names.append(" ".join([*name.get("given", []), name.get("family", "")]).strip())
        if patient and patient.get("birthDate"):
            names.append(f"born {patient['birthDate']}")
    return names
