"""Structural checks for the writes the sandbox accepts (DocumentReference, Binary, Provenance): clear 4xx."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sandbox.fhir.responses import FhirFailure

_DOC_STATUS = {"current", "superseded", "entered-in-error"}


def _fail(message: str) -> FhirFailure:
    return FhirFailure(422, "invalid", message)


def check_writable(resource_type: str, body: Any) -> None:
    """Raise 400/422 naming the first problem; these are the R4 cardinalities a client most often gets wrong."""
    if not isinstance(body, dict):
        raise FhirFailure(400, "structure", "body must be a JSON object")
    if body.get("resourceType") != resource_type:
        raise FhirFailure(400, "invalid", f"resourceType must be {resource_type}")
    if resource_type == "Binary":
        if not isinstance(body.get("contentType"), str) or not body["contentType"]:
            raise _fail("Binary.contentType is required")
        if "data" in body:
            try:
                base64.b64decode(str(body["data"]), validate=True)
            except binascii.Error:
                raise _fail("Binary.data must be base64") from None
        return
    if resource_type == "Provenance":
        _check_provenance(body)
        return
    if body.get("status") not in _DOC_STATUS:
        raise _fail("DocumentReference.status must be current, superseded or entered-in-error")
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise _fail("DocumentReference.content needs at least one entry")
    for item in content:
        att = item.get("attachment") if isinstance(item, dict) else None
        if not isinstance(att, dict) or not (att.get("data") or att.get("url")):
            raise _fail("each DocumentReference.content needs an attachment with data or url")
    subject = body.get("subject")
    if subject is not None and not (isinstance(subject, dict) and isinstance(subject.get("reference"), str)):
        raise _fail("DocumentReference.subject must be a Reference")


def _check_provenance(body: dict[str, Any]) -> None:
    """R4 Provenance: target 1..*, recorded 1..1, agent 1..* each with ``who``."""
    if not isinstance(body.get("target"), list) or not body["target"]:
        raise _fail("Provenance.target needs at least one Reference")
    if not isinstance(body.get("recorded"), str):
        raise _fail("Provenance.recorded is required")
    agents = body.get("agent")
    if not isinstance(agents, list) or not agents or not all(isinstance(a, dict) and a.get("who") for a in agents):
        raise _fail("Provenance.agent needs at least one entry, each with who")
